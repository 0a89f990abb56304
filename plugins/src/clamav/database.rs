//! Signature freshness: which engine and database a scanner runs, and whether that
//! database is recent enough to be trusted. clamd answers `VERSION` with
//! `ClamAV 1.4.6/27500/Tue Dec  1 08:21:02 2026` (engine, database version, the database's
//! build time), or with the engine alone (`ClamAV 1.4.6`) when it loaded no versioned
//! database: only local signature files, as a test setup has. A database that stopped
//! updating, or one that is not ClamAV's, scans, but misses what appeared since.

use chrono::{DateTime, NaiveDateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Settings of the database check (`clamav.database`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The oldest database a scan may use, in hours since its build time. 72 hours: ClamAV
    /// publishes its daily database several times a day and freshclam checks every 2 hours
    /// by default, so a database 3 days old means updates have failed about 36 times in a
    /// row (a broken mirror, a proxy, a full disk), not that one was slow; a weekend's
    /// outage of the updates still passes. ClamAV's own warning comes only at 7 days.
    #[serde(default = "default_max_age_hours")]
    #[schemars(range(min = 1, max = 8760))]
    pub max_age_hours: u64,
    /// Scan with a scanner that names no database version (clamd with local signature
    /// files only, or the REST front end, which does not say). Off by default: a
    /// production scanner always has one. Test setups and the quick start turn it on.
    #[serde(default)]
    pub allow_unversioned: bool,
}

fn default_max_age_hours() -> u64 {
    72
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { max_age_hours: default_max_age_hours(), allow_unversioned: false }
    }
}

/// What a scanner said of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScannerVersion {
    /// `ClamAV 1.4.6`, or `REST` when the scanner does not say.
    pub engine: String,
    /// The database's version (`27500`) and build time; `None` when it has none.
    pub database: Option<Database>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Database {
    pub version: u64,
    pub built: DateTime<Utc>,
}

impl ScannerVersion {
    /// Reads clamd's `VERSION` reply. The build time is clamd's `ctime` of it, in the
    /// scanner's local time zone, which is taken for UTC (as containers run): at worst an
    /// age off by the zone's hours.
    pub fn parse(reply: &str) -> Result<ScannerVersion, crate::invalid::Invalid> {
        Self::read(reply).map_err(crate::invalid::Invalid)
    }

    fn read(reply: &str) -> Result<ScannerVersion, String> {
        let reply = reply.trim();
        let mut parts = reply.splitn(3, '/');
        let engine = parts.next().unwrap_or_default().to_string();
        if !engine.starts_with("ClamAV ") {
            return Err(format!("the scanner answered VERSION with {reply:?}, not `ClamAV <version>...`"));
        }
        let database = match (parts.next(), parts.next()) {
            (None, _) => None,
            (Some(v), Some(time)) => {
                let version =
                    v.parse().map_err(|_| format!("VERSION {reply:?}: database version {v:?} is not a number"))?;
                let built = NaiveDateTime::parse_from_str(time.trim(), "%a %b %e %H:%M:%S %Y")
                    .map_err(|e| format!("VERSION {reply:?}: database time {time:?}: {e}"))?
                    .and_utc();
                Some(Database { version, built })
            }
            (Some(_), None) => return Err(format!("VERSION {reply:?}: a database version without its time")),
        };
        Ok(ScannerVersion { engine, database })
    }

    /// How the version reads in reports and provenance: `ClamAV 1.4.6/27500/2026-12-01T08:21:02Z`.
    pub fn describe(&self) -> String {
        match &self.database {
            Some(d) => format!("{}/{}/{}", self.engine, d.version, d.built.format("%Y-%m-%dT%H:%M:%SZ")),
            None => format!("{} (no database version)", self.engine),
        }
    }

    /// Whether scans may use this scanner now: `Err` says why not and what to change
    /// (refused: no rerun helps until the database is loaded or updated).
    pub fn check(&self, cfg: &DatabaseConfig, now: DateTime<Utc>) -> Result<(), dqpipe_engine::api::NodeError> {
        self.usable(cfg, now).map_err(dqpipe_engine::api::NodeError::refused)
    }

    fn usable(&self, cfg: &DatabaseConfig, now: DateTime<Utc>) -> Result<(), String> {
        match &self.database {
            None if cfg.allow_unversioned => Ok(()),
            None => Err(format!(
                "{} names no database version (only local signature files, or a scanner that does not say): \
                 its signatures cannot be known current. Load ClamAV's database (freshclam), or set \
                 `database: {{ allow_unversioned: true }}` on the clamav node for a test setup",
                self.engine
            )),
            Some(d) => {
                let age = now.signed_duration_since(d.built);
                if age.num_hours() >= cfg.max_age_hours as i64 {
                    return Err(format!(
                        "the scanner's database {} was built {} ({} hours ago), over database.max_age_hours ({}): \
                         its updates have stopped; fix freshclam, or raise the limit",
                        d.version,
                        d.built.format("%Y-%m-%d %H:%M UTC"),
                        age.num_hours(),
                        cfg.max_age_hours
                    ));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn versions_are_read_and_aged() {
        let v = ScannerVersion::parse("ClamAV 1.4.6/27500/Tue Dec  1 08:21:02 2026").unwrap();
        assert_eq!(v.engine, "ClamAV 1.4.6");
        assert_eq!(v.database, Some(Database { version: 27500, built: at("2026-12-01T08:21:02Z") }));
        assert_eq!(v.describe(), "ClamAV 1.4.6/27500/2026-12-01T08:21:02Z");
        let cfg = DatabaseConfig::default();
        assert!(v.check(&cfg, at("2026-12-04T08:00:00Z")).is_ok(), "71 hours");
        let old = v.check(&cfg, at("2026-12-04T08:30:00Z")).unwrap_err();
        assert!(old.message.contains("72 hours ago") && old.message.contains("max_age_hours (72)"), "{old}");

        let bare = ScannerVersion::parse("ClamAV 1.4.6").unwrap();
        assert_eq!(bare.database, None);
        assert!(bare.check(&cfg, Utc::now()).unwrap_err().message.contains("allow_unversioned: true"));
        assert!(bare.check(&DatabaseConfig { allow_unversioned: true, ..cfg }, Utc::now()).is_ok());

        for bad in ["PONG", "ClamAV 1.4.6/x/Tue Dec  1 08:21:02 2026", "ClamAV 1.4.6/27500", "ClamAV 1/2/yesterday"] {
            assert!(ScannerVersion::parse(bad).is_err(), "{bad}");
        }
    }
}
