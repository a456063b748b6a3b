use tideway_macros::service;
use tideway_rpc::RpcError;

#[service]
trait Echo {
    async fn no_receiver(text: String) -> Result<String, RpcError>;
    async fn nothing_at_all() -> Result<String, RpcError>;
    async fn by_mut(&mut self, text: String) -> Result<String, RpcError>;
    async fn by_value(self, text: String) -> Result<String, RpcError>;
    async fn boxed(self: Box<Self>, text: String) -> Result<String, RpcError>;
}

fn main() {}
