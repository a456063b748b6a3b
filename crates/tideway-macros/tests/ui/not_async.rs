use tideway_macros::service;
use tideway_rpc::RpcError;

#[service]
trait Echo {
    fn say(&self, text: String) -> Result<String, RpcError>;
}

fn main() {}
