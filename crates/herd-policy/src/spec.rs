//! Policy specs as users write them: `NAME[:KEY=VALUE,...]`, several joined with `+`, each
//! optionally weighted with `WEIGHT*`: `hotspot:threshold=0.8,k=3,n=5`,
//! `0.7*forecast:horizon=30m+0.3*balance`. Durations take `s`, `m` or `h` (plain numbers are
//! seconds); fractions are 0..1 (`0.8`) or percentages (`80%`).

use crate::error::PolicyError;
use crate::policies::balance::Balance;
use crate::policies::consolidate::Consolidate;
use crate::policies::forecast::Forecast;
use crate::policies::hotspot::Hotspot;
use crate::policies::{NonePolicy, Policy, Weighted};

/// The built-in policy names.
pub const POLICY_NAMES: &[&str] = &["none", "hotspot", "balance", "consolidate", "forecast"];

/// Parses a policy spec (see the module docs).
pub fn parse_policy(spec: &str) -> Result<Box<dyn Policy>, PolicyError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(PolicyError::BadSpec { spec: spec.into(), why: "empty".into() });
    }
    let terms: Vec<&str> = spec.split('+').map(str::trim).collect();
    if terms.len() == 1 && !terms[0].contains('*') {
        return parse_one(terms[0]);
    }
    let mut parts = Vec::new();
    for term in terms {
        let (w, p) = match term.split_once('*') {
            Some((w, p)) => {
                let w: f64 = w.trim().parse().map_err(|_| PolicyError::BadSpec {
                    spec: spec.into(),
                    why: format!("weight `{}` is not a number", w.trim()),
                })?;
                if !(w > 0.0 && w.is_finite()) {
                    return Err(PolicyError::BadSpec {
                        spec: spec.into(),
                        why: format!("weight {w} must be positive"),
                    });
                }
                (w, p)
            }
            None => (1.0, term),
        };
        parts.push((w, parse_one(p.trim())?));
    }
    Ok(Box::new(Weighted { parts }))
}

struct Params<'a> {
    policy: &'a str,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Params<'a> {
    fn bad(&self, param: &str, value: &str, why: impl Into<String>) -> PolicyError {
        PolicyError::BadValue { policy: self.policy.into(), param: param.into(), value: value.into(), why: why.into() }
    }

    fn check_known(&self, known: &[&str]) -> Result<(), PolicyError> {
        for (k, _) in &self.pairs {
            if !known.contains(k) {
                return Err(PolicyError::UnknownParam {
                    policy: self.policy.into(),
                    param: (*k).into(),
                    known: if known.is_empty() { "no parameters".into() } else { known.join(", ") },
                });
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn fraction(&self, key: &str, default: f64) -> Result<f64, PolicyError> {
        let Some(v) = self.get(key) else { return Ok(default) };
        let x = match v.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map(|x| x / 100.0),
            None => v.parse::<f64>(),
        }
        .map_err(|_| self.bad(key, v, "not a number"))?;
        if !(0.0..=1.0).contains(&x) {
            return Err(self.bad(key, v, "must be between 0 and 1 (or 0% and 100%)"));
        }
        Ok(x)
    }

    fn count(&self, key: &str, default: usize) -> Result<usize, PolicyError> {
        let Some(v) = self.get(key) else { return Ok(default) };
        match v.parse::<usize>() {
            Ok(0) => Err(self.bad(key, v, "must be at least 1")),
            Ok(n) => Ok(n),
            Err(_) => Err(self.bad(key, v, "not a whole number")),
        }
    }

    fn secs(&self, key: &str, default: f64) -> Result<f64, PolicyError> {
        let Some(v) = self.get(key) else { return Ok(default) };
        let (num, mult) = match v.as_bytes().last() {
            Some(b's') => (&v[..v.len() - 1], 1.0),
            Some(b'm') => (&v[..v.len() - 1], 60.0),
            Some(b'h') => (&v[..v.len() - 1], 3600.0),
            _ => (v, 1.0),
        };
        let x: f64 = num.trim().parse().map_err(|_| self.bad(key, v, "not a duration (e.g. 1800, 30m, 1h)"))?;
        if !(x > 0.0 && x.is_finite()) {
            return Err(self.bad(key, v, "must be positive"));
        }
        Ok(x * mult)
    }
}

fn parse_one(term: &str) -> Result<Box<dyn Policy>, PolicyError> {
    let (name, rest) = term.split_once(':').unwrap_or((term, ""));
    let name = name.trim();
    let mut pairs = Vec::new();
    for kv in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| PolicyError::BadSpec { spec: term.into(), why: format!("`{kv}` is not KEY=VALUE") })?;
        pairs.push((k.trim(), v.trim()));
    }
    let p = Params { policy: name, pairs };
    Ok(match name {
        "none" => {
            p.check_known(&[])?;
            Box::new(NonePolicy)
        }
        "hotspot" => {
            p.check_known(&["threshold", "k", "n", "margin", "max_moves"])?;
            let d = Hotspot::default();
            let h = Hotspot {
                threshold: p.fraction("threshold", d.threshold)?,
                k: p.count("k", d.k)?,
                n: p.count("n", d.n)?,
                margin: p.fraction("margin", d.margin)?,
                max_moves: p.count("max_moves", d.max_moves)?,
            };
            if h.k > h.n {
                return Err(p.bad("k", &h.k.to_string(), format!("must not exceed n ({})", h.n)));
            }
            Box::new(h)
        }
        "balance" => {
            p.check_known(&["tolerance", "n", "max_moves"])?;
            let d = Balance::default();
            Box::new(Balance {
                tolerance: p.fraction("tolerance", d.tolerance)?,
                n: p.count("n", d.n)?,
                max_moves: p.count("max_moves", d.max_moves)?,
            })
        }
        "consolidate" => {
            p.check_known(&["low", "target", "high", "window"])?;
            let d = Consolidate::default();
            let c = Consolidate {
                low: p.fraction("low", d.low)?,
                target: p.fraction("target", d.target)?,
                high: p.fraction("high", d.high)?,
                window: p.count("window", d.window)?,
            };
            if c.target > c.high {
                return Err(p.bad("target", &c.target.to_string(), format!("must not exceed high ({})", c.high)));
            }
            Box::new(c)
        }
        "forecast" => {
            p.check_known(&["horizon", "threshold", "margin", "season", "max_moves", "k", "n", "hold"])?;
            let d = Forecast::default();
            let f = Forecast {
                horizon_secs: p.secs("horizon", d.horizon_secs)?,
                threshold: p.fraction("threshold", d.threshold)?,
                margin: p.fraction("margin", d.margin)?,
                season_secs: p.secs("season", d.season_secs)?,
                max_moves: p.count("max_moves", d.max_moves)?,
                k: p.count("k", d.k)?,
                n: p.count("n", d.n)?,
                hold_secs: p.secs("hold", d.hold_secs)?,
                ..d
            };
            if f.k > f.n {
                return Err(p.bad("k", &f.k.to_string(), format!("must not exceed n ({})", f.n)));
            }
            // The seasonal forecast reaches half a season ahead (beyond, it would repeat itself).
            if f.hold_secs.max(f.horizon_secs) > f.season_secs / 2.0 {
                let (param, value) =
                    if f.hold_secs >= f.horizon_secs { ("hold", f.hold_secs) } else { ("horizon", f.horizon_secs) };
                return Err(p.bad(
                    param,
                    &value.to_string(),
                    format!("must be at most half the season ({} s)", f.season_secs / 2.0),
                ));
            }
            Box::new(f)
        }
        other => {
            return Err(PolicyError::UnknownPolicy { name: other.into(), known: POLICY_NAMES.join(", ") });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_params_and_weights() {
        assert_eq!(parse_policy("none").unwrap().spec(), "none");
        assert_eq!(
            parse_policy("hotspot:threshold=80%,k=2,n=4").unwrap().spec(),
            "hotspot:threshold=0.8,k=2,n=4,margin=0.1"
        );
        assert!(parse_policy("forecast:horizon=30m").unwrap().spec().starts_with("forecast:horizon=1800,"));
        let w = parse_policy("0.7*forecast + 0.3*balance:tolerance=0.1").unwrap().spec();
        assert!(w.starts_with("0.7*forecast:") && w.contains("+0.3*balance:tolerance=0.1"), "{w}");
    }

    #[test]
    fn bad_specs_are_clear_errors() {
        let e = |s: &str| parse_policy(s).err().expect(s).to_string();
        assert_eq!(e("hotpot"), "unknown policy `hotpot` (known: none, hotspot, balance, consolidate, forecast)");
        assert_eq!(
            e("hotspot:treshold=0.8"),
            "policy `hotspot` has no parameter `treshold` (it takes: threshold, k, n, margin, max_moves)"
        );
        assert!(e("hotspot:threshold=high").contains("not a number"));
        assert!(e("hotspot:threshold=1.5").contains("between 0 and 1"));
        assert!(e("hotspot:k=6,n=5").contains("must not exceed n"));
        assert!(e("none:x=1").contains("no parameters"));
        assert!(e("forecast:horizon=soon").contains("not a duration"));
        assert!(e("forecast:k=4,n=3").contains("must not exceed n (3)"));
        assert_eq!(
            e("forecast:hold=13h"),
            "policy `forecast`: parameter `hold` = `46800`: must be at most half the season (43200 s)"
        );
        assert!(e("x*hotspot").contains("weight `x`"));
        assert!(e("hotspot:k").contains("not KEY=VALUE"));
        assert!(e("").contains("empty"));
    }
}
