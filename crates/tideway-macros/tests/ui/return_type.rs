use tideway_macros::service;
use tideway_rpc::RpcError;

#[derive(Debug)]
struct MyError;

mod alias {
    pub type Result<T> = std::result::Result<T, tideway_rpc::RpcError>;
}

#[service]
trait Echo {
    async fn fine(&self) -> Result<(), RpcError>;
    async fn nothing(&self, text: String);
    async fn plain(&self, text: String) -> String;
    async fn option(&self, text: String) -> Option<String>;
    async fn other_error(&self, text: String) -> Result<String, MyError>;
    async fn aliased(&self, text: String) -> alias::Result<String>;
}

fn main() {}
