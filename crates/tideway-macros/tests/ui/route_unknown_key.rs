use tideway_macros::service;
use tideway_rpc::RpcError;

#[service]
trait Echo {
    #[route(GET, "/echo", cache_ttl = 60)]
    async fn say(&self, text: String) -> Result<String, RpcError>;
}

fn main() {}
