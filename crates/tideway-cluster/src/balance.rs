//! The load-balancing algorithms, as pure functions over slot indices: each takes how many
//! slots there are and closures that say whether a slot may be picked now, what it costs or
//! weighs. The cluster supplies the closures from its endpoints' state; the tests supply
//! numbers.

/// Random draws p2c and random make before they fall back to scanning for eligible slots.
const SAMPLE_TRIES: usize = 8;

/// Power of two choices: two distinct random eligible slots, the cheaper wins.
pub(crate) fn p2c(
    n: usize,
    eligible: impl Fn(usize) -> bool,
    cost: impl Fn(usize) -> f64,
) -> Option<usize> {
    let (a, b) = two_random(n, &eligible)?;
    let Some(b) = b else { return Some(a) };
    Some(if cost(b) < cost(a) { b } else { a })
}

/// A uniformly random eligible slot.
pub(crate) fn random(n: usize, eligible: impl Fn(usize) -> bool) -> Option<usize> {
    two_random(n, &eligible).map(|(a, _)| a)
}

/// Up to two distinct random eligible slots: `None` when there is none, `(a, None)` when there
/// is one.
fn two_random(n: usize, eligible: &impl Fn(usize) -> bool) -> Option<(usize, Option<usize>)> {
    match n {
        0 => return None,
        // One or two slots need no sampling (for one, the draws for a second distinct slot
        // could only fail, all SAMPLE_TRIES of them, before the scan below).
        1 => return eligible(0).then_some((0, None)),
        2 => {
            let a = fastrand::usize(..2);
            let b = 1 - a;
            return match (eligible(a), eligible(b)) {
                (true, true) => Some((a, Some(b))),
                (true, false) => Some((a, None)),
                (false, true) => Some((b, None)),
                (false, false) => None,
            };
        }
        _ => {}
    }
    let mut first = None;
    for _ in 0..SAMPLE_TRIES {
        let i = fastrand::usize(..n);
        if first == Some(i) || !eligible(i) {
            continue;
        }
        match first {
            None => first = Some(i),
            Some(a) => return Some((a, Some(i))),
        }
    }
    // Few eligible slots: choose among them by rank.
    let count = (0..n).filter(|&i| eligible(i)).count();
    let nth = |rank: usize| (0..n).filter(|&i| eligible(i)).nth(rank);
    match count {
        0 => None,
        1 => nth(0).map(|a| (a, None)),
        _ => {
            let ra = fastrand::usize(..count);
            let mut rb = fastrand::usize(..count - 1);
            if rb >= ra {
                rb += 1;
            }
            let a = nth(ra)?;
            Some((a, nth(rb)))
        }
    }
}

/// The `start`-th eligible slot, counting over the eligible slots only: while a slot is
/// ineligible (ejected, draining) its turns are spread over the others evenly, not all given to
/// the slot after it.
pub(crate) fn round_robin(
    n: usize,
    start: usize,
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    let count = (0..n).filter(|&i| eligible(i)).count();
    if count == 0 {
        return None;
    }
    (0..n)
        .filter(|&i| eligible(i))
        .nth(start % count)
        // Eligibility may change between the two passes (other calls finish meanwhile).
        .or_else(|| (0..n).find(|&i| eligible(i)))
}

/// Smooth weighted round robin (nginx): every eligible slot gains its weight, the richest is
/// picked and pays the total. `weight(i)` is 0 for a slot that may not be picked now.
/// `current` holds the running credits, one per slot.
pub(crate) fn smooth_weighted(current: &mut [i64], weight: impl Fn(usize) -> i64) -> Option<usize> {
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for i in 0..current.len() {
        let w = weight(i);
        if w <= 0 {
            continue;
        }
        current[i] += w;
        total += w;
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let best = best?;
    current[best] -= total;
    Some(best)
}

/// Weighted rendezvous (highest random weight) hashing: the eligible slot with the highest
/// `weight / -ln(u)`, where `u` in (0, 1) comes from hashing the key with the slot's identity.
/// A key keeps its slot while that slot stays; a removed or ineligible slot's keys spread over
/// the others by their weights, and the others' keys do not move.
pub(crate) fn rendezvous(
    n: usize,
    key: u64,
    identity: impl Fn(usize) -> u64,
    weight: impl Fn(usize) -> f64,
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for i in 0..n {
        let h = mix64(key ^ identity(i).rotate_left(17));
        // 53 random bits into (0, 1).
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = weight(i) / -u.ln();
        if best.is_none_or(|(_, s)| score > s) && eligible(i) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

/// A stable 64-bit hash (FNV-1a, then a finaliser): the same on every gateway and across
/// releases, unlike std's hasher, so gateways agree on where a key goes.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// splitmix64's finaliser: spreads every input bit over the output.
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(n: usize, picks: impl Iterator<Item = Option<usize>>) -> Vec<usize> {
        let mut c = vec![0; n];
        for p in picks {
            c[p.expect("a pick")] += 1;
        }
        c
    }

    #[test]
    fn round_robin_cycles_and_skips_ineligible() {
        let picks: Vec<_> = (0..6)
            .map(|s| round_robin(3, s, |_| true).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let picks: Vec<_> = (0..6)
            .map(|s| round_robin(3, s, |i| i != 1).unwrap())
            .collect();
        // The ineligible slot's turns are shared, not all given to its successor.
        assert_eq!(picks, [0, 2, 0, 2, 0, 2]);
        assert_eq!(round_robin(3, 0, |_| false), None);
        assert_eq!(round_robin(0, 0, |_| true), None);
    }

    #[test]
    fn random_is_uniform_over_eligible() {
        let c = counts(4, (0..40_000).map(|_| random(4, |i| i != 2)));
        assert_eq!(c[2], 0);
        for i in [0, 1, 3] {
            assert!((12_000..14_700).contains(&c[i]), "{c:?}");
        }
        assert_eq!(random(3, |_| false), None);
        assert_eq!(random(1, |_| true), Some(0));
    }

    #[test]
    fn one_or_two_slots_are_picked_among_the_eligible_only() {
        for _ in 0..100 {
            assert_eq!(two_random(1, &|_| true), Some((0, None)));
            assert_eq!(two_random(1, &|_| false), None);
            assert_eq!(two_random(2, &|i| i == 1), Some((1, None)));
            assert_eq!(two_random(2, &|i| i == 0), Some((0, None)));
            assert_eq!(two_random(2, &|_| false), None);
        }
        let firsts = counts(
            2,
            (0..2_000).map(|_| {
                let (a, b) = two_random(2, &|_| true).unwrap();
                assert_eq!(b, Some(1 - a));
                Some(a)
            }),
        );
        assert!(firsts.iter().all(|&c| c > 800), "{firsts:?}");
        assert_eq!(p2c(2, |_| true, |i| i as f64), Some(0));
    }

    #[test]
    fn p2c_prefers_the_cheaper_and_never_the_most_expensive() {
        // Costs 1, 2, 3: slot 0 wins whenever drawn (2/3 of pairs), slot 2 never.
        let c = counts(3, (0..30_000).map(|_| p2c(3, |_| true, |i| (i + 1) as f64)));
        assert_eq!(c[2], 0, "{c:?}");
        assert!((19_000..21_000).contains(&c[0]), "{c:?}");
        // A single eligible slot is picked whatever its cost; none eligible, none picked.
        assert_eq!(p2c(3, |i| i == 2, |i| (i + 1) as f64), Some(2));
        assert_eq!(p2c(3, |_| false, |_| 0.0), None);
        // Sparse eligibility among many slots still compares two.
        let c = counts(
            100,
            (0..2_000).map(|_| p2c(100, |i| i == 10 || i == 90, |i| i as f64)),
        );
        assert_eq!(c[10], 2_000);
    }

    #[test]
    fn smooth_weighted_follows_weights_evenly() {
        let weights = [5i64, 1, 1];
        let mut current = [0i64; 3];
        let seq: Vec<_> = (0..7)
            .map(|_| smooth_weighted(&mut current, |i| weights[i]).unwrap())
            .collect();
        // nginx's example: a a b a c a a, for weights 5, 1, 1.
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
        let mut current = [0i64; 3];
        let c = counts(
            3,
            (0..7000).map(|_| smooth_weighted(&mut current, |i| weights[i])),
        );
        assert_eq!(c, [5000, 1000, 1000]);
        // An ineligible slot (weight 0) gets nothing, the others share.
        let mut current = [0i64; 3];
        let c = counts(
            3,
            (0..600).map(|_| smooth_weighted(&mut current, |i| [0, 1, 2][i])),
        );
        assert_eq!(c, [0, 200, 400]);
        let mut current = [0i64; 2];
        assert_eq!(smooth_weighted(&mut current, |_| 0), None);
    }

    fn ids(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| stable_hash(format!("instance-{i}").as_bytes()))
            .collect()
    }

    #[test]
    fn rendezvous_is_stable_and_moves_only_the_keys_of_a_changed_slot() {
        let five = ids(5);
        let pick = |set: &[u64], key: u64| {
            rendezvous(set.len(), key, |i| set[i], |_| 1.0, |_| true).map(|i| set[i])
        };
        let keys: Vec<u64> = (0..10_000)
            .map(|k| stable_hash(format!("key-{k}").as_bytes()))
            .collect();
        let before: Vec<u64> = keys.iter().map(|&k| pick(&five, k).unwrap()).collect();
        // Same inputs, same answers.
        assert!(
            keys.iter()
                .zip(&before)
                .all(|(&k, &b)| pick(&five, k) == Some(b))
        );
        // Spread evenly.
        for id in &five {
            let n = before.iter().filter(|b| *b == id).count();
            assert!((1_700..2_300).contains(&n), "{n}");
        }
        // Remove instance 2: only its keys move.
        let four: Vec<u64> = five.iter().copied().filter(|&id| id != five[2]).collect();
        for (&k, &b) in keys.iter().zip(&before) {
            let now = pick(&four, k).unwrap();
            if b != five[2] {
                assert_eq!(now, b, "a key of a remaining instance moved");
            }
        }
        // Add a sixth: keys move only to it, about 1/6 of them.
        let six = ids(6);
        let mut moved = 0;
        for (&k, &b) in keys.iter().zip(&before) {
            let now = pick(&six, k).unwrap();
            if now != b {
                assert_eq!(now, six[5], "a key moved between old instances");
                moved += 1;
            }
        }
        assert!((1_300..2_100).contains(&moved), "{moved}");
        // An ineligible instance's keys go to their next choice; the others stay.
        for (&k, &b) in keys.iter().zip(&before) {
            let i = rendezvous(5, k, |i| five[i], |_| 1.0, |i| i != 0).unwrap();
            assert_ne!(i, 0);
            if b != five[0] {
                assert_eq!(five[i], b);
            }
        }
    }

    #[test]
    fn rendezvous_follows_weights() {
        let set = ids(3);
        let weights = [1.0, 2.0, 1.0];
        let c = counts(
            3,
            (0..20_000u64).map(|k| {
                rendezvous(
                    3,
                    stable_hash(&k.to_le_bytes()),
                    |i| set[i],
                    |i| weights[i],
                    |_| true,
                )
            }),
        );
        assert!((9_000..11_000).contains(&c[1]), "{c:?}");
    }

    #[test]
    fn stable_hash_is_fixed() {
        // Pinned values: gateways of different builds must agree.
        // (Computed independently from the FNV-1a and splitmix64 definitions.)
        assert_eq!(stable_hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(stable_hash(b"tenant-1"), 0x82b9_4b9e_8abe_94cd);
        assert_ne!(stable_hash(b"tenant-1"), stable_hash(b"tenant-2"));
    }
}
