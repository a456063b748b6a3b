use serde::{Deserialize, Serialize};
use tideway_macros::service;
use tideway_rpc::RpcError;

#[derive(Serialize, Deserialize)]
pub struct NoSchema {
    pub x: u32,
}

#[service(name = "demo.Things", schema)]
trait Things {
    #[route(POST, "/things")]
    async fn create(&self, #[body] thing: NoSchema) -> Result<(), RpcError>;
}

fn main() {}
