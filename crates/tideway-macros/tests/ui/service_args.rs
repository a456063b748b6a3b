use tideway_macros::service;
use tideway_rpc::RpcError;

#[service(name = "demo.Echo", version = 2)]
trait Echo {
    async fn say(&self, text: String) -> Result<String, RpcError>;
}

#[service(name = "demo/Echo")]
trait Slash {
    async fn say(&self, text: String) -> Result<String, RpcError>;
}

#[service(name = "demo.Echo", name = "demo.Other")]
trait Twice {
    async fn say(&self, text: String) -> Result<String, RpcError>;
}

fn main() {}
