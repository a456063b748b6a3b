use tideway_macros::service;
use tideway_rpc::RpcError;

#[service(name = "demo.Echo")]
trait Echo {
    #[route(GET, "/echo/{text}")]
    async fn say(&self, text: String) -> Result<String, RpcError>;
    #[route(get, "/echo/{word}")]
    async fn shout(&self, word: String) -> Result<String, RpcError>;
    #[route(POST, "/api/demo/echo/whisper")]
    async fn murmur(&self, text: String) -> Result<String, RpcError>;
    async fn whisper(&self, text: String) -> Result<String, RpcError>;
}

fn main() {}
