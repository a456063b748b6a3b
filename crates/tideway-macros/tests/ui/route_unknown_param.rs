use tideway_macros::service;
use tideway_rpc::RpcError;

#[service]
trait Waybills {
    #[route(GET, "/api/waybills/{waybill_id}")]
    async fn get(&self, id: String) -> Result<String, RpcError>;
}

fn main() {}
