use tideway_macros::service;
use tideway_rpc::RpcError;

#[service]
trait Echo {
    #[route(GET, "echo/{text}")]
    async fn say(&self, text: String) -> Result<String, RpcError>;
    #[route(GET, "/echo/{text")]
    async fn shout(&self, text: String) -> Result<String, RpcError>;
    #[route(GET, "/echo?loud=1")]
    async fn whisper(&self, text: String) -> Result<String, RpcError>;
}

fn main() {}
