//! Where a remote domain's server is (RFC 6120 §3.2.1, XEP-0368 §3): DNS SRV
//! records `_xmpps-server._tcp` (direct TLS) and `_xmpp-server._tcp`
//! (STARTTLS), merged and ordered as RFC 2782 says, with the domain's own
//! A/AAAA records on port 5269 as the fallback (RFC 6120 §3.2.2).

use hickory_resolver::TokioResolver;
use tracing::debug;

/// The default s2s port (RFC 6120 §14.7).
pub const DEFAULT_PORT: u16 = 5269;

/// One place to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// XEP-0368: TLS from the first byte instead of STARTTLS.
    pub direct_tls: bool,
}

/// An SRV record of either service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    /// RFC 2782 priority (lower first).
    pub priority: u16,
    /// RFC 2782 weight (higher is chosen more often within a priority).
    pub weight: u16,
    /// Target port.
    pub port: u16,
    /// Target host, without the trailing dot.
    pub target: String,
    /// From `_xmpps-server._tcp` (XEP-0368).
    pub direct_tls: bool,
}

/// RFC 2782 ordering of the merged records (XEP-0368 §3: both services
/// form one set). Lower priority first; within a priority, a weighted random
/// choice, repeated: `pick(total)` returns a number in `0..=total`. Records
/// with weight 0 go first among the candidates, as RFC 2782 asks, so they
/// are only chosen when the pick is 0 (or when only they are left).
pub fn order(mut records: Vec<SrvRecord>, pick: &mut dyn FnMut(u32) -> u32) -> Vec<SrvRecord> {
    records.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .take_while(|r| r.priority == first.priority)
            .count();
        let (group, tail) = rest.split_at(n);
        rest = tail;
        let mut group: Vec<SrvRecord> = group.to_vec();
        // Zero weights first (stable otherwise).
        group.sort_by_key(|r| r.weight != 0);
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let chosen = pick(total).min(total);
            let mut running = 0u32;
            let mut index = group.len() - 1;
            for (i, r) in group.iter().enumerate() {
                running += u32::from(r.weight);
                if running >= chosen {
                    index = i;
                    break;
                }
            }
            out.push(group.remove(index));
        }
    }
    out
}

/// The targets of `domain`: SRV records if there are any; none at all if the
/// only record is "." (RFC 2782: the service is decidedly not available);
/// else the domain itself on port 5269.
pub(crate) async fn resolve(resolver: Option<&TokioResolver>, domain: &str) -> Vec<Target> {
    let fallback = || {
        vec![Target {
            host: domain.to_owned(),
            port: DEFAULT_PORT,
            direct_tls: false,
        }]
    };
    let Some(resolver) = resolver else {
        return fallback();
    };
    let lookup = |service: &'static str, direct_tls: bool| {
        let name = format!("{service}.{domain}.");
        async move {
            match resolver.srv_lookup(name.as_str()).await {
                Ok(l) => l
                    .iter()
                    .map(|r| SrvRecord {
                        priority: r.priority(),
                        weight: r.weight(),
                        port: r.port(),
                        target: r.target().to_utf8().trim_end_matches('.').to_owned(),
                        direct_tls,
                    })
                    .collect(),
                Err(e) => {
                    debug!(%name, error = %e, "no SRV records");
                    Vec::new()
                }
            }
        }
    };
    let (direct, starttls) = tokio::join!(
        lookup("_xmpps-server._tcp", true),
        lookup("_xmpp-server._tcp", false)
    );
    let records: Vec<SrvRecord> = direct.into_iter().chain(starttls).collect();
    if records.is_empty() {
        return fallback();
    }
    let usable: Vec<SrvRecord> = records
        .into_iter()
        .filter(|r| !r.target.is_empty() && r.target != ".")
        .collect();
    use rand::Rng;
    let mut rng = rand::thread_rng();
    order(usable, &mut |total| rng.gen_range(0..=total))
        .into_iter()
        .map(|r| Target {
            host: r.target,
            port: r.port,
            direct_tls: r.direct_tls,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(priority: u16, weight: u16, target: &str, direct_tls: bool) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 5269,
            target: target.into(),
            direct_tls,
        }
    }

    fn names(v: &[SrvRecord]) -> Vec<&str> {
        v.iter().map(|r| r.target.as_str()).collect()
    }

    /// RFC 2782: priorities in ascending order whatever the weights, and
    /// the direct TLS and STARTTLS records form one set (XEP-0368 §3).
    #[test]
    fn orders_by_priority_across_both_services() {
        let records = vec![
            rec(20, 100, "c", false),
            rec(10, 0, "a", true),
            rec(30, 5, "d", true),
            rec(10, 0, "b", false),
        ];
        let ordered = order(records, &mut |_| 0);
        assert_eq!(names(&ordered), ["a", "b", "c", "d"]);
        assert!(ordered[0].direct_tls && !ordered[1].direct_tls);
    }

    /// Within a priority the running sum of weights decides: a pick of
    /// the total always takes the last record, a pick of 0 the zero-weight
    /// one put first.
    #[test]
    fn weighted_choice_within_a_priority() {
        let group = || {
            vec![
                rec(1, 10, "ten", false),
                rec(1, 30, "thirty", true),
                rec(1, 0, "zero", false),
            ]
        };
        // total 40: pick 40 → running sums zero 0, ten 10, thirty 40.
        let ordered = order(group(), &mut |total| total);
        assert_eq!(names(&ordered), ["thirty", "ten", "zero"]);
        let ordered = order(group(), &mut |_| 0);
        assert_eq!(names(&ordered), ["zero", "ten", "thirty"]);
        // pick 5 of 40: ten (running 10 ≥ 5); then pick 5 of 30: thirty.
        let ordered = order(group(), &mut |_| 5);
        assert_eq!(names(&ordered), ["ten", "thirty", "zero"]);
    }

    /// With random picks, heavier records come first more often.
    #[test]
    fn weights_bias_the_choice() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut heavy_first = 0;
        for _ in 0..1000 {
            let o = order(
                vec![rec(0, 90, "heavy", false), rec(0, 10, "light", false)],
                &mut |t| rng.gen_range(0..=t),
            );
            heavy_first += usize::from(o[0].target == "heavy");
        }
        assert!((850..=950).contains(&heavy_first), "{heavy_first}");
    }
}
