use tideway_macros::service;
use tideway_rpc::RpcError;

#[derive(Debug)]
struct MyError;

#[service]
trait Echo {
    async fn nothing(&self, text: String);
    async fn plain(&self, text: String) -> String;
    async fn option(&self, text: String) -> Option<String>;
    async fn other_error(&self, text: String) -> Result<String, MyError>;
    async fn one_arg(&self, text: String) -> Result<String>;
}

fn main() {}
