//! `cron::CronSchedule::parse`: never panics or hangs; an accepted schedule has no newline
//! or `%` (it goes into a cron.d line), has a next run, and parses back from its text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbxwall::cron::CronSchedule;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(schedule) = CronSchedule::parse(&text) {
        let s = schedule.as_str();
        assert!(!s.contains(['\n', '\r', '%']), "accepted {s:?}");
        assert!(
            !schedule.next_runs(chrono::Local::now(), 2).is_empty(),
            "{s:?} never runs"
        );
        CronSchedule::parse(s).unwrap_or_else(|e| panic!("accepted {s:?} does not re-parse: {e}"));
    }
});
