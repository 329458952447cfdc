//! A fleet of 10,000 workers, 1,000 lost at once: one grouped notification, and the cost of
//! an evaluation (printed; run with `--no-capture` to see it).
mod support;

use std::time::Instant;

use support::*;

#[test]
fn ten_thousand_workers_thousand_lost() {
    let mut engine = engine(config());
    let t = t0();
    let mut fleet = Fleet::new(t);
    let names: Vec<String> = (0..10_000).map(|i| format!("w{i:05}@host")).collect();
    let up: Vec<(&str, Up)> = names.iter().map(|n| (n.as_str(), Up::Alive)).collect();
    fleet.poll(t, "big", &up);
    let start = Instant::now();
    assert!(eval(&mut engine, &fleet, t).transitions.is_empty());
    let quiet = start.elapsed();

    let some_down: Vec<(&str, Up)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.as_str(),
                if i % 10 == 0 { Up::Crashed } else { Up::Alive },
            )
        })
        .collect();
    fleet.poll(t + secs(1), "big", &some_down);
    let start = Instant::now();
    let out = eval(&mut engine, &fleet, t + secs(1));
    let raising = start.elapsed();
    assert_eq!(out.transitions.len(), 1000);
    let start = Instant::now();
    let out = eval(&mut engine, &fleet, t + secs(2));
    let notifying = start.elapsed();
    assert_eq!(out.notifications.len(), 1);
    assert_eq!(out.notifications[0].alerts.len(), 1000);
    let start = Instant::now();
    assert!(
        eval(&mut engine, &fleet, t + secs(3))
            .notifications
            .is_empty()
    );
    let steady = start.elapsed();
    eprintln!(
        "10,000 workers: quiet {quiet:?}; 1,000 lost: raise {raising:?}, notify {notifying:?}, steady {steady:?}"
    );
}
