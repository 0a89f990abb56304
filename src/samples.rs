//! A generator of NATS archive files like ../shared/samples/: deterministic for a seed,
//! optionally with infected files (the EICAR test string inside a JSON string value) and
//! malformed ones (each class the transform must dead-letter).
//!
//! Part of the command line (`dqpipe samples`), not of the plugins: no pipeline uses it.
//! The EICAR string comes from the scanner's plugin ([`dqpipe_plugins::clamav::eicar`]).

use std::path::Path;

use rand::{Rng, SeedableRng};
use serde::Serialize;

/// What a generated file is, for tests and the quick start to check where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleClass {
    Clean,
    Infected,
    Malformed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub name: String,
    pub class: SampleClass,
    /// `YYYY-MM-DD` for clean files.
    pub msg_date: Option<String>,
}

const TYPES: &[&str] = &["FPL", "CHG", "DLA", "CNL", "DEP", "ARR"];
const AIRPORTS: &[&str] = &["EGLL", "EGKK", "EGCC", "EGPH", "EDDF", "LFPG", "KJFK", "EHAM", "EIDW", "LEMD"];
const AIRLINES: &[&str] = &["BAW", "VIR", "EZY", "RYR", "DLH", "AFR", "KLM", "UAL"];

/// Writes `count` files into `dir`: the first `infected` positions (spread through the
/// set) infected, the next `malformed` malformed, the rest clean. Returns what it wrote.
pub fn generate(
    dir: &Path,
    count: usize,
    seed: u64,
    infected: usize,
    malformed: usize,
    pad_to: usize,
) -> std::io::Result<Vec<Sample>> {
    std::fs::create_dir_all(dir)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(count);
    // Problem files at evenly spread positions.
    let step = count.checked_div(infected + malformed).map(|s| s.max(1)).unwrap_or(usize::MAX);
    for i in 0..count {
        let id: u64 = rng.random();
        let name = format!("[-PRMD=EG-ADMD=ICAO-C=XX-;MTA-EGGG-1-MTCU_{id:016X}].json");
        let (yy, mm, dd) = (rng.random_range(19..=24u32), rng.random_range(1..=12u32), rng.random_range(1..=28u32));
        let (h, m, s) = (rng.random_range(0..24u32), rng.random_range(0..60u32), rng.random_range(0..60u32));
        let when = format!("{yy:02}{mm:02}{dd:02}{h:02}{m:02}{s:02}Z");
        let ty = TYPES[rng.random_range(0..TYPES.len())];
        let callsign = format!("{}{}", AIRLINES[rng.random_range(0..AIRLINES.len())], rng.random_range(1..9999u32));
        let adep = AIRPORTS[rng.random_range(0..AIRPORTS.len())];
        let ades = AIRPORTS[rng.random_range(0..AIRPORTS.len())];
        let slot = if step == usize::MAX || i % step != 0 { None } else { Some(i / step) };
        let class = match slot {
            Some(k) if k < infected => SampleClass::Infected,
            Some(k) if k < infected + malformed => SampleClass::Malformed,
            _ => SampleClass::Clean,
        };
        let mut body_text = format!("({ty}-{callsign}-{adep}{h:02}{m:02}-{ades})");
        if pad_to > 0 {
            // Bulk for benchmarks: keep files near the requested size.
            let filler = pad_to.saturating_sub(600);
            body_text.push_str(&" ".repeat(filler));
        }
        let text = match class {
            SampleClass::Clean => {
                message(&name, &when, ty, &callsign, adep, ades, &serde_json::to_string(&body_text).unwrap_or_default())
            }
            // The raw EICAR bytes inside a JSON string (its backslash is not escaped, as a
            // scanner must see the exact 68 bytes).
            SampleClass::Infected => {
                message(&name, &when, ty, &callsign, adep, ades, &format!("\"{}\"", dqpipe_plugins::clamav::eicar()))
            }
            SampleClass::Malformed => match (i / step.max(1)) % 4 {
                0 => format!("{{'X400Message': {{'envelope': {{'messageDeliveryTime': '{when}'}}}}}}\n"),
                1 => String::new(),
                2 => message(
                    &name,
                    &format!("{yy:02}13{dd:02}{h:02}{m:02}Z"),
                    ty,
                    &callsign,
                    adep,
                    ades,
                    "\"(bad month)\"",
                ),
                _ => format!("{{\"X400Message\": {{\"content\": {{}}}}, \"{ty}\": {{\"ARCID\": \"{callsign}\"}}}}\n"),
            },
        };
        std::fs::write(dir.join(&name), text)?;
        let msg_date = (class == SampleClass::Clean).then(|| format!("20{yy:02}-{mm:02}-{dd:02}"));
        out.push(Sample { name, class, msg_date });
    }
    Ok(out)
}

fn message(name: &str, when: &str, ty: &str, callsign: &str, adep: &str, ades: &str, body_json: &str) -> String {
    let mts = name.trim_end_matches(".json");
    format!(
        r#"{{
  "X400Message": {{
    "envelope": {{
      "messageDeliveryTime": "{when}",
      "messageSubmissionTime": "{when}",
      "originator": "/C=XX/ADMD=ICAO/PRMD=EG/O=EGGG/OU1=EGTTZQZX/",
      "recipients": [
        "/C=XX/ADMD=ICAO/PRMD=EG/O=EGGG/OU1=EGGGYFYX/"
      ],
      "mtsIdentifier": "{mts}"
    }},
    "content": {{
      "priority": "FF",
      "filingTime": "{}",
      "body": {body_json}
    }}
  }},
  "{ty}": {{
    "ARCID": "{callsign}",
    "ADEP": "{adep}",
    "ADES": "{ades}",
    "EOBT": "{}",
    "EOBD": "{}"
  }}
}}
"#,
        &when[4..10],
        &when[6..10],
        &when[0..6]
    )
}
