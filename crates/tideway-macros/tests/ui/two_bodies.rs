use tideway_macros::service;
use tideway_rpc::RpcError;

#[derive(serde::Serialize, serde::Deserialize)]
struct Parcel {
    grams: u32,
}

#[service]
trait Parcels {
    #[route(POST, "/api/parcels")]
    async fn merge(&self, #[body] a: Parcel, #[body] b: Parcel) -> Result<Parcel, RpcError>;
}

fn main() {}
