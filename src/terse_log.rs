//! Log lines as a person at a terminal reads them: `09:30:00  WARN message key=value`,
//! without the run's span (`run{pipeline=... run_id=... shard=}:`) or the module path,
//! which a terminal line has no room for. Piped or collected, logs keep the full format
//! (or JSON), spans and targets included. A formatter of tracing-subscriber's, not a
//! logger: the fields are formatted by the subscriber as usual.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

pub struct Terse;

impl<S, N> FormatEvent<S, N> for Terse
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let level = *event.metadata().level();
        let (on, off) = match (writer.has_ansi_escapes(), level) {
            (true, Level::ERROR) => ("\u{1b}[31m", "\u{1b}[0m"),
            (true, Level::WARN) => ("\u{1b}[33m", "\u{1b}[0m"),
            _ => ("", ""),
        };
        write!(writer, "{} {on}{level:>5}{off} ", chrono::Local::now().format("%H:%M:%S"))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
