//! Plan files (`plan --out`, `plan --format json`): written object by object as the plan
//! is made ([`PlanWriter`]), and read back for `run --plan`, streamed ([`read_plan`]): the
//! file is never held in memory whole. The header is checked as it is read (format, then the spec hash,
//! which comes before the objects), so a plan made from another spec is refused before
//! its objects are read; of each object only its source, key, size and ETag are kept, and
//! only for objects the plan would process.

use std::fmt;
use std::io::Read;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::api::Planned;
use crate::plan::{PlanHeader, PlanStatus, PlanTotals, PlannedObject, PLAN_FORMAT};

/// Writes a plan as one JSON object: the header's fields, `objects` one at a time as they
/// are planned, then `totals` and `objects_shown`. Each part is serialised by serde; write
/// errors are returned, never dropped.
pub struct PlanWriter<W: std::io::Write> {
    out: W,
    objects: u64,
}

impl<W: std::io::Write> PlanWriter<W> {
    pub fn start(mut out: W, header: &PlanHeader) -> std::io::Result<Self> {
        let head = serde_json::to_string(header)?;
        // The header is an object: its closing brace gives way to `objects`.
        out.write_all(head.strip_suffix('}').unwrap_or(&head).as_bytes())?;
        out.write_all(b",\"objects\":[")?;
        Ok(Self { out, objects: 0 })
    }

    pub fn object(&mut self, o: &PlannedObject) -> std::io::Result<()> {
        if self.objects > 0 {
            self.out.write_all(b",")?;
        }
        serde_json::to_writer(&mut self.out, o)?;
        self.objects += 1;
        Ok(())
    }

    /// Ends the plan; `shown` is how many objects it holds (all, in a saved plan).
    pub fn finish(mut self, totals: &PlanTotals, shown: u64) -> std::io::Result<W> {
        self.out.write_all(b"],\"totals\":")?;
        serde_json::to_writer(&mut self.out, totals)?;
        write!(self.out, ",\"objects_shown\":{shown}}}")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Why a plan file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("cannot read the plan: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a plan file: {0}")]
    Malformed(String),
    #[error("the plan was made from a different spec or different variables ({then} then, {now} now); plan again")]
    OtherSpec { then: String, now: String },
}

/// Reads a plan, refusing one made from a spec (after interpolation) whose hash is not
/// `spec_hash`.
pub fn read_plan(reader: impl Read, spec_hash: &str) -> Result<Planned, PlanFileError> {
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(reader));
    let mut refusal = None;
    let planned = de.deserialize_map(PlanVisitor { spec_hash, refusal: &mut refusal });
    match (refusal, planned) {
        (Some(r), _) => Err(r),
        (None, Ok(p)) => Ok(p),
        (None, Err(e)) if e.is_io() => Err(PlanFileError::Io(e.into())),
        (None, Err(e)) => Err(PlanFileError::Malformed(e.to_string())),
    }
}

/// One object of the plan, as much of it as a run needs.
#[derive(Deserialize)]
struct Row {
    source: String,
    key: String,
    size: u64,
    #[serde(default)]
    etag: Option<String>,
    status: PlanStatus,
}

struct PlanVisitor<'a> {
    spec_hash: &'a str,
    /// Set when the plan is refused for a reason of its own (not a syntax error).
    refusal: &'a mut Option<PlanFileError>,
}

impl<'de> Visitor<'de> for PlanVisitor<'_> {
    type Value = Planned;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a {PLAN_FORMAT} object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Planned, A::Error> {
        use serde::de::Error;
        let mut planned = Planned::default();
        let (mut format_ok, mut hash_ok) = (false, false);
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                "format" => {
                    let format: String = map.next_value()?;
                    if format != PLAN_FORMAT {
                        return Err(A::Error::custom(format!("format is {format:?}, expected {PLAN_FORMAT:?}")));
                    }
                    format_ok = true;
                }
                "spec_hash" => {
                    let then: String = map.next_value()?;
                    if then != self.spec_hash {
                        *self.refusal = Some(PlanFileError::OtherSpec { then, now: self.spec_hash.to_string() });
                        return Err(A::Error::custom("refused"));
                    }
                    hash_ok = true;
                }
                "reprocess" => planned.reprocess = map.next_value()?,
                "objects" if format_ok && hash_ok => map.next_value_seed(Objects(&mut planned))?,
                "objects" => return Err(A::Error::custom("`objects` comes before `format` and `spec_hash`")),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !(format_ok && hash_ok) {
            return Err(A::Error::custom(format!("no `format` {PLAN_FORMAT:?} and `spec_hash`")));
        }
        Ok(planned)
    }
}

/// The `objects` array, read one object at a time into the index a run checks.
struct Objects<'a>(&'a mut Planned);

impl<'de> DeserializeSeed<'de> for Objects<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Objects<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of planned objects")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(row) = seq.next_element::<Row>()? {
            if row.status == PlanStatus::Process {
                self.0.objects.entry(row.source).or_default().insert(row.key, (row.size, row.etag));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_of_another_spec_is_refused_before_its_objects_are_read() {
        // The objects are not even valid JSON: only the header may have been read.
        let text = r#"{"format":"dqpipe-plan/1","spec_hash":"sha256:old","objects":[{"broken"#;
        let e = read_plan(text.as_bytes(), "sha256:new").unwrap_err();
        assert!(matches!(e, PlanFileError::OtherSpec { .. }), "{e}");
    }

    #[test]
    fn only_objects_to_process_are_kept() {
        let text = r#"{"format":"dqpipe-plan/1","pipeline":"p","spec_hash":"h","objects":[
            {"source":"list","key":"a","size":1,"etag":"e","status":"process","route":[],"writes":[],"notes":[]},
            {"source":"list","key":"b","size":2,"etag":null,"status":"done","route":[],"writes":[],"notes":[]}
        ],"totals":{}}"#;
        let p = read_plan(text.as_bytes(), "h").unwrap();
        assert_eq!(p.objects["list"].len(), 1);
        assert_eq!(p.objects["list"]["a"], (1, Some("e".to_string())));
        let e = read_plan(&b"{\"format\":\"x\"}"[..], "h").unwrap_err();
        assert!(e.to_string().contains("expected \"dqpipe-plan/1\""), "{e}");
    }
}
