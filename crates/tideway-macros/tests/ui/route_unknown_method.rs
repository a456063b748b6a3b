use tideway_macros::service;
use tideway_rpc::RpcError;

#[service]
trait Echo {
    #[route(FETCH, "/echo")]
    async fn say(&self, text: String) -> Result<String, RpcError>;
}

fn main() {}
