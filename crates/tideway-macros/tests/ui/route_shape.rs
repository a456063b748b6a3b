use tideway_macros::service;
use tideway_rpc::RpcError;

#[service]
trait Echo {
    #[route]
    async fn bare(&self, text: String) -> Result<String, RpcError>;
    #[route(GET)]
    async fn no_path(&self, text: String) -> Result<String, RpcError>;
    #[route(POST, "/a")]
    #[route(POST, "/b")]
    async fn twice(&self, text: String) -> Result<String, RpcError>;
    #[route(GET, "/c", timeout_ms = 0)]
    async fn zero(&self, text: String) -> Result<String, RpcError>;
}

fn main() {}
