use tideway_macros::service;
use tideway_rpc::RpcError;

#[derive(serde::Serialize, serde::Deserialize)]
struct Query {
    text: String,
}

#[service]
trait Search {
    #[route(GET, "/api/search")]
    async fn search(&self, #[body] query: Query) -> Result<Vec<String>, RpcError>;
    #[route(DELETE, "/api/search")]
    async fn forget(&self, #[body] query: Query) -> Result<(), RpcError>;
    #[route(POST, "/api/search/{query}")]
    async fn from_path(&self, #[body] query: Query) -> Result<(), RpcError>;
    async fn with_args(&self, #[body(flatten)] query: Query) -> Result<(), RpcError>;
}

fn main() {}
