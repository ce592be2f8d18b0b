//! Runs `ucx_perftest -t ucp_get` (Debian `ucx-utils`) as the reference:
//! a server and a client on 127.0.0.1 with the same UCX transports and
//! message size, and parses the client's CSV (`-v`) output.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Kills the server on every exit path.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn perftest(tls: &str) -> Command {
    let mut c = Command::new("ucx_perftest");
    c.env("UCX_TLS", tls).env("UCX_NET_DEVICES", "lo");
    c
}

/// Waits for `child` up to `limit`; kills it past that.
fn wait_output(mut child: Child, limit: Duration) -> anyhow::Result<(bool, String)> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            let out = child.wait_with_output()?;
            return Ok((
                status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            ));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("ucx_perftest did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Overall bandwidth in GB/s (10^9 bytes/s) of `iters` gets of `size` bytes.
pub fn get_bandwidth(tls: &str, size: u64, iters: u64) -> anyhow::Result<f64> {
    let port = free_port()?.to_string();
    let _server = Server(
        perftest(tls)
            .args(["-p", &port])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ucx_perftest (apt-get install ucx-utils)")?,
    );
    let warmup = (iters / 10).max(1);
    // The server needs a moment to listen; retry while the client is refused.
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(200));
        let client = perftest(tls)
            .args(["127.0.0.1", "-p", &port, "-t", "ucp_get", "-v"])
            .args([
                "-s",
                &size.to_string(),
                "-n",
                &iters.to_string(),
                "-w",
                &warmup.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let (ok, out) = wait_output(client, Duration::from_secs(300))?;
        if ok {
            return parse_csv(&out);
        }
    }
    bail!("ucx_perftest client could not run against its server on port {port}")
}

/// The `overall_bw` column (MB/s, MB = 2^20 bytes) of the last CSV row, in GB/s.
fn parse_csv(out: &str) -> anyhow::Result<f64> {
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .find(|l| l.starts_with("iterations,"))
        .context("no CSV header in ucx_perftest output")?;
    let col = header
        .split(',')
        .position(|c| c == "overall_bw")
        .context("no overall_bw column")?;
    let row = lines
        .next_back()
        .context("no CSV row in ucx_perftest output")?;
    let mb_s: f64 = row
        .split(',')
        .nth(col)
        .context("short CSV row")?
        .trim()
        .parse()?;
    Ok(mb_s * 1_048_576.0 / 1e9)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_final_row() {
        let out = "iterations,50.0_percentile_lat,avg_lat,overall_lat,avg_bw,overall_bw,avg_mr,overall_mr\n\
                   5000,0.541,0.542,0.542,115309.23,1000.00,1844948,1844948\n";
        let gbps = super::parse_csv(out).unwrap();
        assert!((gbps - 1.048576).abs() < 1e-9);
    }
}
