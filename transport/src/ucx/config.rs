//! What an agent's UCX backend is configured with.

/// UCX settings of one agent. `None` leaves the choice to UCX (and its
/// `UCX_*` environment variables).
#[derive(Debug, Clone, Default)]
pub struct UcxConfig {
    /// Transports (`UCX_TLS`), e.g. `"tcp"` or `"posix,sysv,cma"`.
    pub transports: Option<String>,
    /// Network devices (`UCX_NET_DEVICES`), e.g. `"lo"`.
    pub net_devices: Option<String>,
}
