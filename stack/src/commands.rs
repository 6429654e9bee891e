//! What `lab up`, `down`, `status`, `logs`, `test` and `bench` do (`main.rs` parses the flags).
//!
//! `up` runs the supervisor in the foreground (Ctrl-C stops the stack), or with `--detach` starts
//! itself again in the background (its own process group, output to `<run dir>/lab.log`), shows
//! that log until the stack is ready, and returns. `down` asks that supervisor to stop (SIGTERM)
//! and follows its progress; if the supervisor is gone, it stops the processes itself, by process
//! group, from the state file.

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;

use crate::plan::{Options, Plan, Ports};
use crate::probe;
use crate::state::State;
use crate::supervisor::{group_alive, kill_group, Restart, Supervisor};

/// `lab up`'s flags.
#[derive(Clone, Debug)]
pub struct Up {
    /// The run directory.
    pub dir: PathBuf,
    /// Fixed (DESIGN.md §1) or free ports.
    pub ports: Ports,
    /// Return once ready; the supervisor runs on in the background.
    pub detach: bool,
    /// Leave a process that dies down.
    pub no_restart: bool,
    /// Internal: this is the background supervisor `--detach` started.
    pub supervise: bool,
    /// Leave the simulated market maker out.
    pub no_sim: bool,
    /// Run Prometheus too.
    pub with_prometheus: bool,
    /// How many matchers (more than one: they share the partitions).
    pub matchers: usize,
}

/// The stack `lab up` runs: DESIGN.md §1, with an existing broker or Redis from `KAFKA_BROKERS` /
/// `REDIS_URL`.
pub fn plan(dir: &Path, ports: Ports, sim: bool, prometheus: bool, matchers: usize) -> anyhow::Result<Plan> {
    let mut o = Options::native(dir, ports);
    o.sim = sim;
    o.prometheus = prometheus;
    o.matchers = matchers;
    o.kafka = std::env::var("KAFKA_BROKERS").ok().filter(|v| !v.is_empty());
    o.redis = std::env::var("REDIS_URL").ok().filter(|v| !v.is_empty());
    o.cors_origin = std::env::var("CORS_ORIGIN").ok().filter(|v| !v.is_empty());
    Plan::build(&o)
}

/// True while the supervisor the state file names still runs (and is a `lab up`: a pid reused by
/// another program does not count).
fn supervisor_alive(state: &State) -> bool {
    let Ok(pid) = i32::try_from(state.supervisor) else { return false };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let is_lab = args.first().is_some_and(|a| a.ends_with(b"/lab") || *a == b"lab");
    state.phase != "stopped"
        && kill(Pid::from_raw(pid), None).is_ok()
        && is_lab
        && args.contains(&b"up".as_slice())
}

/// `lab up`.
pub fn up(args: &Up) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let dir = args.dir.canonicalize()?;
    if let Some(state) = State::read(&dir) {
        if supervisor_alive(&state) {
            println!(
                "The stack is already running (supervisor pid {}): ./lab status, ./lab down.",
                state.supervisor
            );
            return Ok(());
        }
        // Processes of an earlier stack whose supervisor died would hold the ports, and a new
        // state file would forget them: they are stopped first.
        let orphans: Vec<&str> =
            state.procs.iter().filter(|p| p.live_pid().is_some()).map(|p| p.name.as_str()).collect();
        if !orphans.is_empty() {
            bail!("processes of an earlier stack still run here ({}): ./lab down first", orphans.join(", "));
        }
    }
    if args.detach && !args.supervise {
        return detach(args, &dir);
    }
    let cancel = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, cancel.clone())?;
    // A closed terminal stops a foreground stack as Ctrl-C would (nothing is left running without
    // its supervisor), and is no reason to stop a detached one.
    let hangup = if args.supervise { Arc::new(AtomicBool::new(false)) } else { cancel.clone() };
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hangup)?;
    let restart = (!args.no_restart).then(Restart::default);
    let mut sup =
        Supervisor::new(plan(&dir, args.ports, !args.no_sim, args.with_prometheus, args.matchers)?, restart)
            .with_output(|line| println!("{line}"));
    sup.persist("starting");
    println!("==> starting the stack (logs in {}/)", dir.display());
    let started = Instant::now();
    if let Err(e) = sup.start_all(&cancel) {
        sup.persist("stopped");
        return Err(e);
    }
    sup.persist("up");
    println!("{}", banner(sup.plan(), started.elapsed()));
    if args.detach {
        println!("Running in the background: ./lab status, ./lab logs <process>, ./lab down.");
    } else {
        println!("Ctrl-C stops everything.");
    }
    let _ = std::io::stdout().flush();
    while !cancel.load(Ordering::SeqCst) {
        sup.tick();
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("==> stopping front to back");
    sup.persist("stopping");
    sup.stop_all();
    sup.persist("stopped");
    Ok(())
}

/// The marker line after which a detached `up` returns.
const UP_LINE: &str = "Trading Lab is up";

fn banner(plan: &Plan, took: Duration) -> String {
    let url = |name: &str| plan.get(name).map_or("-".to_owned(), |p| p.url(""));
    let entry = url("nginx");
    format!(
        r#"
{UP_LINE} (ready in {:.1} s).
  the desk      {entry}/  (sign up, trade; {}/system.html: the live system map)
  public entry  {entry}  (nginx: the page, /place_order, /trade/<id>, /api/v1/*)
  gateways      {}  {}   (POST /place_order, /api/v1/*)
  order entry   {}  {}   (POST /order, /api/v1/orders)
  matcher front {}                          (GET /trade/<id>, /api/v1/...)
  broker        {}      redis {}
  metrics       /metrics on each service; Prometheus {} (--with-prometheus)   logs  {}/<process>.log
  market        {}
  operators     ./lab role <user> operator   (then the desk's Operator page: halt, resume, reference, mass-cancel)

Two traders sign up and log in, cross, and the buyer looks the trade up:
  J='content-type: application/json'
  curl -s -XPOST {entry}/signup -H "$J" -d '{{"username":"alice","password":"alice-password"}}'
  curl -s -XPOST {entry}/signup -H "$J" -d '{{"username":"bob","password":"bob-password"}}'
  A=$(curl -s -XPOST {entry}/login -H "$J" -d '{{"username":"alice","password":"alice-password"}}' | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  B=$(curl -s -XPOST {entry}/login -H "$J" -d '{{"username":"bob","password":"bob-password"}}' | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  curl -s -XPOST {entry}/place_order -H "$J" -H "authorization: Bearer $B" -d '{{"id":"s-1","symbol":"ABC","price":100,"qty":5,"side":"sell"}}'
  curl -s -XPOST {entry}/place_order -H "$J" -H "authorization: Bearer $A" -d '{{"id":"b-1","symbol":"ABC","price":100,"qty":5}}'
  curl -s {entry}/trade/b-1 -H "authorization: Bearer $A"
"#,
        took.as_secs_f64(),
        entry,
        url("gateway-1"),
        url("gateway-2"),
        url("order-svc-1"),
        url("order-svc-2"),
        url("matcher"),
        plan.kafka,
        plan.redis,
        url("prometheus"),
        plan.dir.display(),
        if plan.get("market-sim").is_some() {
            "market-sim quotes every symbol (sim-maker) and crosses now and then (sim-taker); --no-sim leaves it out"
        } else {
            "no simulated market (--no-sim)"
        },
    )
}

/// Starts `lab up --supervise` in the background and shows its log until the stack is up.
fn detach(args: &Up, dir: &Path) -> anyhow::Result<()> {
    let log_path = dir.join("lab.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let from = log.metadata()?.len();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("up").arg("--supervise").arg("--detach").arg("--run-dir").arg(dir);
    if args.no_restart {
        cmd.arg("--no-restart");
    }
    if args.no_sim {
        cmd.arg("--no-sim");
    }
    if args.with_prometheus {
        cmd.arg("--with-prometheus");
    }
    if args.matchers != 1 {
        cmd.arg("--matchers").arg(args.matchers.to_string());
    }
    if args.ports == Ports::Free {
        cmd.arg("--ports").arg("free");
    }
    // Its own process group: a Ctrl-C in this terminal does not reach it.
    let mut child = cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0).spawn()?;
    let mut reader = std::fs::File::open(&log_path)?;
    reader.seek(SeekFrom::Start(from))?;
    let mut reader = std::io::BufReader::new(reader);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? > 0 {
            print!("{line}");
            if line.starts_with(UP_LINE) {
                // The rest of the banner, then return.
                std::thread::sleep(Duration::from_millis(200));
                let mut rest = String::new();
                reader.read_to_string(&mut rest)?;
                print!("{rest}");
                return Ok(());
            }
            continue;
        }
        if let Some(status) = child.try_wait()? {
            let mut rest = String::new();
            reader.read_to_string(&mut rest)?;
            print!("{rest}");
            bail!("the stack did not start ({status}); see {}", log_path.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `lab down`: stops what `lab up` started in `dir`.
pub fn down(dir: &Path) -> anyhow::Result<()> {
    let Some(state) = State::read(dir) else {
        println!("  nothing started by ./lab is running");
        return Ok(());
    };
    if supervisor_alive(&state) {
        let grace: u64 = state.procs.iter().map(|p| p.stop_grace_ms).sum();
        let deadline = Instant::now() + Duration::from_millis(grace) + Duration::from_secs(10);
        let _ = kill(Pid::from_raw(state.supervisor as i32), Signal::SIGTERM);
        let mut running: Vec<String> =
            state.procs.iter().filter(|p| p.pid.is_some()).map(|p| p.name.clone()).collect();
        // Says what stopped, as the state file shows it; false once the supervisor is gone.
        let mut follow = || {
            let alive = supervisor_alive(&state);
            for p in State::read(dir).map(|s| s.procs).unwrap_or_default().iter().rev() {
                if p.pid.is_none() && running.contains(&p.name) {
                    running.retain(|n| n != &p.name);
                    println!("  {:<12} stopped ({})", p.name, p.last_exit.as_deref().unwrap_or("gone"));
                }
            }
            alive
        };
        while follow() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if supervisor_alive(&state) {
            println!(
                "  the supervisor (pid {}) did not stop in time: killing it and its processes",
                state.supervisor
            );
            let _ = kill(Pid::from_raw(state.supervisor as i32), Signal::SIGKILL);
        }
    }
    // Whatever is still there (the supervisor was killed, or gave up): by process group, front
    // to back, SIGTERM then SIGKILL.
    let mut any = false;
    for p in State::read(dir).unwrap_or(state).procs.iter().rev() {
        let Some(pgid) = p.live_pid().filter(|&g| group_alive(g)) else { continue };
        any = true;
        kill_group(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_millis(p.stop_grace_ms);
        while group_alive(pgid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if group_alive(pgid) {
            kill_group(pgid, Signal::SIGKILL);
            println!("  {:<12} killed", p.name);
        } else {
            println!("  {:<12} stopped", p.name);
        }
    }
    if any {
        // Nothing runs any more: say so in the file.
        let mut last =
            State::read(dir).unwrap_or_else(|| State { supervisor: 0, phase: String::new(), procs: vec![] });
        last.phase = "stopped".into();
        last.procs.iter_mut().for_each(|p| p.pid = None);
        last.write(dir)?;
    }
    Ok(())
}

/// One row of `lab status`.
#[derive(Debug, serde::Serialize)]
pub struct Row {
    /// The process's name.
    pub process: String,
    /// Its pid, while it runs.
    pub pid: Option<u32>,
    /// Its port.
    pub port: u16,
    /// Its readiness probe passes.
    pub ready: bool,
    /// Restarts after a death.
    pub restarts: u32,
    /// Seconds since it was (re)started, while it runs.
    pub uptime_s: Option<u64>,
}

/// `lab status`'s rows: from the state file, readiness probed now.
pub fn status_rows(dir: &Path) -> anyhow::Result<Vec<Row>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let Some(state) = State::read(dir) else {
        let plan = plan(dir, Ports::Fixed, true, false, 1)?;
        return Ok(plan
            .procs
            .iter()
            .map(|p| Row {
                process: p.name.clone(),
                pid: None,
                port: p.port,
                ready: false,
                restarts: 0,
                uptime_s: None,
            })
            .collect());
    };
    Ok(state
        .procs
        .iter()
        .map(|p| {
            let alive = p.live_pid().is_some_and(group_alive);
            let probe = p.ready_path.clone().map_or(crate::plan::Probe::Tcp, crate::plan::Probe::Http);
            Row {
                process: p.name.clone(),
                pid: p.pid.filter(|_| alive),
                port: p.port,
                ready: alive && probe::passes(&probe, p.port),
                restarts: p.restarts,
                uptime_s: p.started_unix_ms.filter(|_| alive).map(|t| now.saturating_sub(t) / 1000),
            }
        })
        .collect())
}

/// `lab status [--json]`. A reader that goes away early (`| head`) ends it quietly.
pub fn status(dir: &Path, json: bool) -> anyhow::Result<()> {
    let rows = status_rows(dir)?;
    let mut text = String::new();
    if json {
        text = serde_json::to_string_pretty(&rows)? + "\n";
    } else {
        text += &format!(
            "  {:<12} {:>8} {:>6} {:<6} {:>8} {:>8}\n",
            "process", "pid", "port", "ready", "restarts", "uptime"
        );
        for r in rows {
            let pid = r.pid.map_or("-".to_owned(), |p| p.to_string());
            let ready = if r.pid.is_none() {
                "down"
            } else if r.ready {
                "yes"
            } else {
                "no"
            };
            let up = r
                .uptime_s
                .map_or("-".to_owned(), |s| format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60));
            text +=
                &format!("  {:<12} {pid:>8} {:>6} {ready:<6} {:>8} {up:>8}\n", r.process, r.port, r.restarts);
        }
    }
    match std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `lab logs <process>`: the last lines of its log, then follows it (until Ctrl-C) if `follow`.
pub fn logs(dir: &Path, name: &str, follow: bool) -> anyhow::Result<()> {
    let names: Vec<String> = match State::read(dir) {
        Some(s) => s.procs.into_iter().map(|p| p.name).collect(),
        None => plan(dir, Ports::Fixed, true, false, 1)?.procs.into_iter().map(|p| p.name).collect(),
    };
    if !names.iter().any(|n| n == name) && name != "lab" {
        bail!(
            "no process {name:?}; the stack has: {} (and `lab`, the supervisor's own log)",
            names.join(", ")
        );
    }
    let path = dir.join(format!("{name}.log"));
    let mut file = std::fs::File::open(&path)
        .with_context(|| format!("{} (has the stack run here?)", path.display()))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines[lines.len().saturating_sub(20)..] {
        println!("{l}");
    }
    if !follow {
        return Ok(());
    }
    loop {
        let mut more = String::new();
        file.read_to_string(&mut more)?;
        print!("{more}");
        std::io::stdout().flush()?;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The cargo target directory (`CARGO_TARGET_DIR`, else `<repo>/target`).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| crate::plan::repo_root().join("target"), PathBuf::from)
}

fn run(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    println!("\x1b[1m==> {what}\x1b[0m");
    let status = cmd.current_dir(crate::plan::repo_root()).status().with_context(|| what.to_owned())?;
    anyhow::ensure!(status.success(), "{what}: {status}");
    Ok(())
}

fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    c.args(args);
    c
}

/// Runs a cargo test command, echoing its output and adding its `test result:` counts up.
fn cargo_tests(what: &str, args: &[&str], counts: &mut (u64, u64)) -> anyhow::Result<()> {
    println!("\x1b[1m==> {what}\x1b[0m");
    let mut child = cargo(args)
        .current_dir(crate::plan::repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let out = child.stdout.take().context("cargo's stdout")?;
    for line in std::io::BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            // "ok. 12 passed; 0 failed; 0 ignored; …"
            let words: Vec<&str> = rest.split_whitespace().collect();
            counts.0 += words.get(1).and_then(|w| w.parse().ok()).unwrap_or(0);
            counts.1 += words.get(3).and_then(|w| w.parse().ok()).unwrap_or(0);
        }
    }
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "{what}: {status}");
    Ok(())
}

/// `lab test`: everything CI runs. The bootstrap (`./lab`) installed the tools and the broker.
pub fn test() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut counts = (0, 0);
    run("cargo fmt --check", &mut cargo(&["fmt", "--all", "--check"]))?;
    run(
        "cargo clippy (warnings are errors)",
        &mut cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
    )?;
    run(
        "cargo doc (warnings are errors)",
        cargo(&["doc", "--workspace", "--no-deps", "--quiet"]).env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    run(
        "building the binaries the integration tests start",
        &mut cargo(&["build", "--workspace", "--bins"]),
    )?;
    let cases = std::env::var("PROPTEST_CASES").unwrap_or_else(|_| "2000".into());
    let result = cargo_tests(
        &format!("tests: unit, rules, property ({cases} streams), no-allocation, integration (real broker, Redis, nginx)"),
        &["test", "--workspace"],
        &mut counts,
    )
    .and_then(|()| {
        cargo_tests("benches compile and run once (criterion test mode)", &["test", "--workspace", "--bench", "book"], &mut counts)
    })
    .and_then(|()| bench_smoke());
    if result.is_ok() {
        println!("\x1b[1m==> all checks passed in {} s\x1b[0m", started.elapsed().as_secs());
    }
    // One closing line over every cargo test run above.
    println!("{} passed, {} failed", counts.0, counts.1);
    result
}

fn bench_smoke() -> anyhow::Result<()> {
    println!("\x1b[1m==> book-bench smoke run (debug build: numbers meaningless, shape checked)\x1b[0m");
    let out = Command::new(target_dir().join("debug/book-bench"))
        .args(["--commands", "20000", "--runs", "1"])
        .stderr(Stdio::null())
        .output()
        .context("running book-bench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    for book in ["trading-lab", "lobster", "orderbook-rs"] {
        anyhow::ensure!(text.contains(&format!("| {book}")), "book-bench printed no row for {book}:\n{text}");
    }
    anyhow::ensure!(text.contains("| **worst** |"), "book-bench printed no market-regime summary:\n{text}");
    Ok(())
}

/// `lab bench [flags]`: the book benchmark, built with the `perf` profile.
pub fn bench(flags: &[String]) -> anyhow::Result<()> {
    run(
        "building book-bench (perf profile: fat LTO, one codegen unit; a few minutes on 2 cores)",
        &mut cargo(&["build", "--profile", "perf", "-p", "perf", "--bin", "book-bench"]),
    )?;
    let status = Command::new(target_dir().join("perf/book-bench")).args(flags).status()?;
    anyhow::ensure!(status.success(), "book-bench: {status}");
    Ok(())
}

/// `lab role <user> <role>`: makes a user an `operator` (the admin routes and the desk's operator
/// page) or a `trader` again, in the Redis of the stack (`REDIS_URL`, else the running stack's,
/// else the fixed port). Takes effect on the user's next call: the gateways read the role on
/// every admin call.
pub fn role(dir: &Path, user: &str, role: &str) -> anyhow::Result<()> {
    if !["operator", "trader"].contains(&role) {
        bail!("role must be \"operator\" or \"trader\", not {role:?}");
    }
    let redis = match std::env::var("REDIS_URL").ok().filter(|v| !v.is_empty()) {
        Some(url) => url,
        None => match State::read(dir).and_then(|s| s.procs.into_iter().find(|p| p.name == "redis")) {
            Some(p) => format!("redis://127.0.0.1:{}", p.port),
            None => format!("redis://127.0.0.1:{}", crate::plan::fixed::REDIS),
        },
    };
    set_role(&redis, user, role)?;
    println!(
        "{user} is now an {role}.",
        role = if role == "operator" { "operator" } else { "ordinary trader" }
    );
    Ok(())
}

/// Sets `user`'s role in the user store at `redis` (`user:<name>`'s `role`), if the user exists.
pub fn set_role(redis: &str, user: &str, role: &str) -> anyhow::Result<()> {
    let key = format!("user:{user}");
    // One round trip, atomic: the role is set only if the user exists.
    let script = "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'role', ARGV[1]); return 1 else return 0 end";
    let reply = redis_command(redis, &["EVAL", script, "1", &key, role])?;
    match reply.trim() {
        ":1" => Ok(()),
        ":0" => bail!("no user {user:?}: they sign up first (the desk, or POST /api/v1/auth/signup)"),
        other => bail!("Redis answered {other:?}"),
    }
}

/// Sends one command to the Redis at `redis` (`redis://host:port`) on a connection of its own
/// and returns the first line of the answer (e.g. `:42` for an integer).
pub fn redis_command(redis: &str, args: &[&str]) -> anyhow::Result<String> {
    let addr = redis.trim_start_matches("redis://").trim_end_matches('/');
    let mut conn =
        std::net::TcpStream::connect(addr).with_context(|| format!("connecting to Redis at {addr}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    resp(&mut conn, args)
}

/// Sends one command in Redis's protocol and reads the first line of the answer.
fn resp(conn: &mut std::net::TcpStream, args: &[&str]) -> anyhow::Result<String> {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.write_all(out.as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(conn).read_line(&mut line)?;
    Ok(line)
}
