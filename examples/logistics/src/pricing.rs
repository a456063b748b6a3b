//! The tariff: a base price per service level, a charge per started 500 g, and a charge per zone
//! crossed.

use tideway_rpc::RpcError;

use crate::model::{Quote, QuoteRequest, ServiceLevel, weight, zone};

/// Weight is billed in steps of this many grams.
const WEIGHT_STEP_GRAMS: u32 = 500;

pub(crate) fn quote(request: &QuoteRequest) -> Result<Quote, RpcError> {
    weight("weight_grams", request.weight_grams)?;
    zone("from_zone", request.from_zone)?;
    zone("to_zone", request.to_zone)?;
    let zones_crossed = u64::from(request.from_zone.abs_diff(request.to_zone));
    if request.service_level == ServiceLevel::SameDay && zones_crossed != 0 {
        return Err(RpcError::invalid_argument(
            "service_level: same_day is only offered within one zone",
        ));
    }
    let steps = request.weight_grams.div_ceil(WEIGHT_STEP_GRAMS);
    let (base, per_step, per_zone, days) = match request.service_level {
        ServiceLevel::Standard => (500, 120, 80, 3 + zones_crossed.min(2) as u8),
        ServiceLevel::Express => (1200, 200, 150, 1),
        ServiceLevel::SameDay => (2500, 300, 0, 0),
    };
    Ok(Quote {
        price_cents: base + per_step * u64::from(steps) + per_zone * zones_crossed,
        currency: "EUR".into(),
        delivery_days: days,
        billable_grams: steps * WEIGHT_STEP_GRAMS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tideway_rpc::Status;

    fn req(weight_grams: u32, from: u8, to: u8, level: ServiceLevel) -> QuoteRequest {
        QuoteRequest {
            weight_grams,
            from_zone: from,
            to_zone: to,
            service_level: level,
        }
    }

    #[test]
    fn price_grows_with_weight_zones_and_speed() {
        let light = quote(&req(400, 1, 1, ServiceLevel::Standard)).unwrap();
        assert_eq!(light.billable_grams, 500);
        assert_eq!(light.price_cents, 500 + 120);
        let heavy = quote(&req(1200, 1, 1, ServiceLevel::Standard)).unwrap();
        assert_eq!(heavy.price_cents, 500 + 3 * 120);
        let far = quote(&req(1200, 1, 4, ServiceLevel::Standard)).unwrap();
        assert_eq!(far.price_cents, heavy.price_cents + 3 * 80);
        let fast = quote(&req(1200, 1, 4, ServiceLevel::Express)).unwrap();
        assert!(fast.price_cents > far.price_cents);
        assert_eq!(fast.delivery_days, 1);
    }

    #[test]
    fn bad_input_names_the_field() {
        let err = quote(&req(0, 1, 1, ServiceLevel::Standard)).unwrap_err();
        assert_eq!(err.status(), Status::InvalidArgument);
        assert!(err.message().starts_with("weight_grams"), "{err}");
        let err = quote(&req(100, 9, 1, ServiceLevel::Standard)).unwrap_err();
        assert!(err.message().starts_with("from_zone"), "{err}");
        let err = quote(&req(100, 1, 2, ServiceLevel::SameDay)).unwrap_err();
        assert!(err.message().starts_with("service_level"), "{err}");
    }
}
