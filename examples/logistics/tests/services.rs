//! The logistics services through the generated clients over real TCP, in both codecs.

use tideway_logistics::*;
use tideway_rpc::{Client, ClientConfig, Codec, Server, ServerHandle, Status};

async fn serve(limits: StoreLimits) -> ServerHandle {
    let services = Logistics::new(limits);
    Server::builder()
        .add_service(WaybillsServer::new(services.clone()))
        .add_service(TrackingServer::new(services.clone()))
        .add_service(PricingServer::new(services))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn new_waybill(weight_grams: u32) -> NewWaybill {
    let party = |name: &str, zone| Party {
        name: name.into(),
        address: "1 Main Street".into(),
        zone,
    };
    NewWaybill {
        sender: party("Sender", 1),
        recipient: party("Recipient", 2),
        weight_grams,
        service_level: ServiceLevel::Standard,
    }
}

#[tokio::test]
async fn waybill_lifecycle_in_both_codecs() {
    let server = serve(StoreLimits::default()).await;
    for codec in [Codec::Json, Codec::MsgPack] {
        let client = Client::new(
            server.local_addr(),
            ClientConfig {
                codec,
                ..Default::default()
            },
        )
        .unwrap();
        let waybills = WaybillsClient::new(client.clone());
        let tracking = TrackingClient::new(client);

        let created = waybills.create(new_waybill(900)).await.unwrap();
        assert_eq!(created.status, WaybillStatus::Created);
        assert_eq!(waybills.get(created.id.clone()).await.unwrap(), created);

        let event = tracking
            .append(
                created.id.clone(),
                NewTrackingEvent {
                    status: WaybillStatus::PickedUp,
                    location: "Depot".into(),
                    note: Some("fragile".into()),
                },
            )
            .await
            .unwrap();
        assert_eq!(event.sequence, 1);
        let history = tracking.history(created.id.clone()).await.unwrap();
        assert_eq!(history, vec![event]);
        assert_eq!(
            waybills.get(created.id).await.unwrap().status,
            WaybillStatus::PickedUp,
            "{codec}"
        );
    }
}

#[tokio::test]
async fn invalid_input_names_the_field_and_missing_ids_are_not_found() {
    let server = serve(StoreLimits::default()).await;
    let client = Client::new(server.local_addr(), ClientConfig::default()).unwrap();
    let waybills = WaybillsClient::new(client.clone());
    let err = waybills.create(new_waybill(0)).await.unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument);
    assert!(err.message().starts_with("weight_grams"), "{err}");
    let mut bad = new_waybill(10);
    bad.recipient.zone = 0;
    let err = waybills.create(bad).await.unwrap_err();
    assert!(err.message().starts_with("recipient.zone"), "{err}");
    let err = waybills.get("WB404".into()).await.unwrap_err();
    assert_eq!(err.status(), Status::NotFound);
    let err = TrackingClient::new(client)
        .history("WB404".into())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Status::NotFound);
}

#[tokio::test]
async fn listing_pages_and_the_store_is_bounded() {
    let server = serve(StoreLimits {
        max_waybills: 5,
        max_events_per_waybill: 1,
    })
    .await;
    let client = Client::new(server.local_addr(), ClientConfig::default()).unwrap();
    let waybills = WaybillsClient::new(client.clone());
    for _ in 0..5 {
        waybills.create(new_waybill(100)).await.unwrap();
    }
    let err = waybills.create(new_waybill(100)).await.unwrap_err();
    assert_eq!(err.status(), Status::Overloaded, "{err}");

    let page = waybills.list(Some(0), Some(2)).await.unwrap();
    assert_eq!(
        (page.items.len(), page.total, page.next_offset),
        (2, 5, Some(2))
    );
    let last = waybills.list(Some(4), None).await.unwrap();
    assert_eq!((last.items.len(), last.next_offset), (1, None));
    let err = waybills.list(None, Some(1000)).await.unwrap_err();
    assert!(err.message().starts_with("limit"), "{err}");

    let tracking = TrackingClient::new(client);
    let id = page.items[0].id.clone();
    let event = NewTrackingEvent {
        status: WaybillStatus::InTransit,
        location: "Hub".into(),
        note: None,
    };
    tracking.append(id.clone(), event.clone()).await.unwrap();
    let err = tracking.append(id, event).await.unwrap_err();
    assert_eq!(err.status(), Status::Overloaded, "{err}");
}

#[tokio::test]
async fn quotes() {
    let server = serve(StoreLimits::default()).await;
    let pricing =
        PricingClient::new(Client::new(server.local_addr(), ClientConfig::default()).unwrap());
    let quote = pricing
        .quote(QuoteRequest {
            weight_grams: 1000,
            from_zone: 2,
            to_zone: 2,
            service_level: ServiceLevel::SameDay,
        })
        .await
        .unwrap();
    assert_eq!(quote.delivery_days, 0);
    assert_eq!(quote.currency, "EUR");
}
