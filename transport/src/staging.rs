//! Chooses how a region is exposed to peers. Host memory and device memory
//! that UCX can register are exposed directly; device memory UCX cannot
//! register goes through a pinned host mirror (`crate::cuda::Staging`).

#[cfg(feature = "cuda")]
pub(crate) use crate::cuda::Staging;

#[cfg(not(feature = "cuda"))]
mod host_only {
    use crate::coalesce::Run;
    use crate::error::Result;
    use crate::region::{Region, RegionMemory};

    /// Without feature `cuda` there is nothing to stage: this type has no values.
    pub(crate) enum Staging {}

    impl Staging {
        pub(crate) fn choose(region: &Region, _backend_has_cuda: bool) -> Result<Option<Staging>> {
            match region.memory {
                RegionMemory::Host => Ok(None),
            }
        }
        pub(crate) fn host_base(&self) -> u64 {
            match *self {}
        }
        pub(crate) fn to_host(&self, _runs: &[Run], _block_bytes: u64) -> Result<()> {
            match *self {}
        }
        pub(crate) fn to_device(&self, _runs: &[Run], _block_bytes: u64) -> Result<()> {
            match *self {}
        }
    }
}

#[cfg(not(feature = "cuda"))]
pub(crate) use host_only::Staging;
