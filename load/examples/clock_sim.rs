//! Deterministic simulation of clock-sync estimators under the impairing
//! proxy's delay model: no sockets, seeded RNGs, same figures every run.
//!
//! Each simulated follower pings the gateway on a schedule; the way out and
//! the way back are `load::proxy::Schedule`s (uniform jitter, and TCP order:
//! a pong waits behind ticks and events sent before it that drew a longer
//! delay). Its local clock is off by a constant and may drift. At sampling
//! instants (every 500 ms) each strategy's offset estimate is compared with
//! the true offset; p50/p99 of |error| over devices and instants are printed
//! per time window since connect (8–23 s is what a `bandsync-load` run with
//! an 8 s warm-up and 15 s window measures).
//!
//! cargo run --release -p bandsync-load --example clock_sim [-- --hour] [--devices N]

use bandsync_client::ClockSync;
use bandsync_load::proxy::{Leg, Schedule};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tokio::time::Instant;

type Us = i64;

#[derive(Clone, Copy)]
struct Sample {
    t0: Us,
    server: Us,
    t3: Us,
    /// True time the pong arrived (when the estimator may use it).
    arrived: Us,
}

impl Sample {
    fn rtt(&self) -> Us {
        self.t3 - self.t0
    }
    fn offset(&self) -> Us {
        self.server - (self.t0 + self.t3) / 2
    }
}

#[derive(Clone, Copy)]
struct Path {
    name: &'static str,
    up: (f64, f64),
    down: (f64, f64),
}

#[derive(Clone, Copy)]
struct Pinging {
    name: &'static str,
    /// Pings one after another at connect (each waits for its pong).
    burst: usize,
    /// Faster spaced pings for the first seconds: (every ms, for ms).
    fast: Option<(u64, u64)>,
    every_ms: u64,
}

const STRATEGIES: &[&str] = &[
    "best 3 of 32 by RTT (before)",
    "lowest RTT of 32",
    "lowest RTT of 256",
    "lowest RTT+age·15ppm of 1024",
    "mean of RTT ≤ min+2ms of 256",
    "mean of all 32",
    "intersection (SDK now)",
];

fn leg(delay_ms: f64, jitter_ms: f64) -> Leg {
    Leg {
        delay: Duration::from_secs_f64(delay_ms / 1000.0),
        jitter: Duration::from_secs_f64(jitter_ms / 1000.0),
        stall_every: None,
        stall: Duration::ZERO,
        bytes_per_sec: None,
    }
}

/// One device's samples over `horizon` µs of true time.
fn device(path: Path, ping: Pinging, drift_ppm: f64, horizon: Us, seed: u64) -> Vec<Sample> {
    let base = Instant::now();
    let at = |t: Us| base + Duration::from_micros(t as u64);
    let back = |i: Instant| (i - base).as_micros() as Us;
    let mut up = Schedule::new(leg(path.up.0, path.up.1), seed, base);
    let mut down = Schedule::new(leg(path.down.0, path.down.1), seed ^ 0xd0d0, base);
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(31));
    let off0: Us = rng.random_range(-1_000_000..1_000_000);
    let local = |t: Us| t + off0 + (t as f64 * drift_ppm / 1e6) as Us;
    // Down traffic besides pongs: 10 Hz ticks and a tempo event every 2 s.
    let mut next_tick: Us = rng.random_range(0..100_000);
    let mut next_event: Us = rng.random_range(0..2_000_000);
    let mut samples = Vec::new();
    let mut exchange = |ts: Us, down: &mut Schedule, up: &mut Schedule| -> Us {
        let ta = back(up.deliver_at(at(ts)));
        while next_tick.min(next_event) < ta {
            if next_tick < next_event {
                down.deliver_at(at(next_tick));
                next_tick += 100_000;
            } else {
                down.deliver_at(at(next_event));
                next_event += 2_000_000;
            }
        }
        let tr = back(down.deliver_at(at(ta)));
        samples.push(Sample {
            t0: local(ts),
            server: ta,
            t3: local(tr),
            arrived: tr,
        });
        tr
    };
    let mut t: Us = 0;
    for _ in 0..ping.burst {
        t = exchange(t, &mut down, &mut up);
    }
    let mut next: Us = t + rng.random_range(0..ping.every_ms as Us * 1000);
    let mut fast_next = t;
    while next < horizon {
        let ts = match ping.fast {
            Some((every, until)) if fast_next < (until as Us) * 1000 && fast_next < next => {
                fast_next += every as Us * 1000;
                fast_next - every as Us * 1000
            }
            _ => {
                next += ping.every_ms as Us * 1000;
                next - ping.every_ms as Us * 1000
            }
        };
        exchange(ts, &mut down, &mut up);
    }
    // Pongs of fast and spaced pings interleave in send order only approximately:
    // keep them in arrival order for the estimators.
    samples.sort_by_key(|s| s.arrived);
    samples
}

fn lowest_by(window: &[Sample], key: impl Fn(&Sample) -> Us) -> Us {
    window
        .iter()
        .min_by_key(|s| key(s))
        .map_or(0, Sample::offset)
}

fn mean(it: impl Iterator<Item = Us>) -> Us {
    let (sum, n) = it.fold((0i64, 0i64), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0 } else { sum / n }
}

fn tail(seen: &[Sample], n: usize) -> &[Sample] {
    &seen[seen.len().saturating_sub(n)..]
}

fn estimate(strategy: usize, seen: &[Sample], now_local: Us, sdk: &ClockSync) -> Us {
    match strategy {
        0 => {
            let mut w: Vec<_> = tail(seen, 32).to_vec();
            w.sort_by_key(Sample::rtt);
            mean(w.iter().take(3).map(Sample::offset))
        }
        1 => lowest_by(tail(seen, 32), Sample::rtt),
        2 => lowest_by(tail(seen, 256), Sample::rtt),
        3 => lowest_by(tail(seen, 1024), |s| {
            s.rtt() / 2 + (now_local - s.t0) * 15 / 1_000_000
        }),
        4 => {
            let w = tail(seen, 256);
            let min = w.iter().map(Sample::rtt).min().unwrap_or(0);
            mean(
                w.iter()
                    .filter(|s| s.rtt() <= min + 2_000)
                    .map(Sample::offset),
            )
        }
        5 => mean(tail(seen, 32).iter().map(Sample::offset)),
        _ => sdk.offset(),
    }
}

fn pct(v: &mut [Us], p: f64) -> f64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let hour = args.iter().any(|a| a == "--hour");
    let devices: u64 = args
        .iter()
        .position(|a| a == "--devices")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(200);
    let mut windows: Vec<(&str, Us, Us)> = vec![
        ("8–23 s", 8_000_000, 23_000_000),
        ("1 min", 60_000_000, 75_000_000),
        ("10 min", 600_000_000, 615_000_000),
    ];
    if hour {
        windows.push(("1 h", 3_585_000_000, 3_600_000_000));
    }
    let horizon = windows.last().expect("windows").2;
    let paths = [
        Path {
            name: "up 50±25, down 30±10 (bench jitter suite)",
            up: (50.0, 25.0),
            down: (30.0, 10.0),
        },
        Path {
            name: "up 50±25, down 50±25",
            up: (50.0, 25.0),
            down: (50.0, 25.0),
        },
        Path {
            name: "up 50±25, down 50±10",
            up: (50.0, 25.0),
            down: (50.0, 10.0),
        },
    ];
    let pings = [
        Pinging {
            name: "4 burst, 1/s",
            burst: 4,
            fast: None,
            every_ms: 1000,
        },
        Pinging {
            name: "16 burst, 1/s",
            burst: 16,
            fast: None,
            every_ms: 1000,
        },
        Pinging {
            name: "4 burst, 4/s for 10 s, 1/s",
            burst: 4,
            fast: Some((250, 10_000)),
            every_ms: 1000,
        },
        Pinging {
            name: "0 burst, 1/s",
            burst: 0,
            fast: None,
            every_ms: 1000,
        },
    ];
    for drift in [0.0, 20.0] {
        for path in paths {
            let floor = ((path.up.0 - path.up.1) - (path.down.0 - path.down.1)) / 2.0;
            println!(
                "\n## {} — drift {drift} ppm — floor asymmetry/2 = {floor:+.1} ms (invisible to any round-trip estimate)",
                path.name
            );
            print!("| strategy | pings |");
            for w in &windows {
                print!(" {} p50 / p99 |", w.0);
            }
            println!();
            println!("|---|---|{}", "---|".repeat(windows.len()));
            for ping in pings {
                // errors[strategy][window]
                let mut errors = vec![vec![Vec::<Us>::new(); windows.len()]; STRATEGIES.len()];
                for d in 0..devices {
                    let seed = 1 + d * 7919;
                    let samples = device(path, ping, drift, horizon, seed);
                    // Same local-clock constant as `device` draws.
                    let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(31));
                    let off0: Us = rng.random_range(-1_000_000..1_000_000);
                    let local = |t: Us| t + off0 + (t as f64 * drift / 1e6) as Us;
                    let mut sdk = ClockSync::default();
                    let mut fed = 0;
                    for (wi, &(_, from, to)) in windows.iter().enumerate() {
                        let mut t = from;
                        while t < to {
                            while fed < samples.len() && samples[fed].arrived <= t {
                                let s = samples[fed];
                                sdk.add_sample(s.t0, s.server, s.t3);
                                fed += 1;
                            }
                            let truth = t - local(t);
                            for (si, e) in errors.iter_mut().enumerate() {
                                let est = estimate(si, &samples[..fed], local(t), &sdk);
                                e[wi].push((est - truth).abs());
                            }
                            t += 500_000;
                        }
                    }
                }
                for (si, e) in errors.iter_mut().enumerate() {
                    print!("| {} | {} |", STRATEGIES[si], ping.name);
                    for w in e.iter_mut() {
                        print!(" {:.2} / {:.2} |", pct(w, 0.5), pct(w, 0.99));
                    }
                    println!();
                }
            }
        }
    }
}
