use tideway_macros::service;
use tideway_rpc::RpcError;

#[service(name = "demo.Pages")]
trait Pages {
    async fn list(&self, #[schemars(range(min = 1))] limit: Option<u32>) -> Result<(), RpcError>;
}

#[service(name = "demo.Twice", schema, schema)]
trait Twice {
    async fn say(&self, text: String) -> Result<String, RpcError>;
}

fn main() {}
