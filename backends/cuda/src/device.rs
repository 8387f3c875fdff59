//! Finding a GPU: the driver library is loaded at run time (cudarc's `dynamic-loading`),
//! so kiln builds, tests and runs on machines without CUDA, and says in one line why it
//! cannot use a GPU there.

use cudarc::driver::{result, sys};

/// A CUDA device that the driver reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Its ordinal.
    pub ordinal: i32,
    /// Its name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Its compute capability, e.g. `(9, 0)`.
    pub capability: (i32, i32),
}

/// Why no GPU can be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// `libcuda` is not installed (or not on the loader's path).
    #[error("no CUDA driver found (libcuda is not installed or not on the library path)")]
    NoDriver,
    /// The driver loaded but reports no device.
    #[error("no CUDA device")]
    NoDevice,
    /// The driver failed.
    #[error("CUDA driver error: {0}")]
    Driver(String),
}

/// The first CUDA device. Checks that the driver library exists before calling into it:
/// cudarc panics on the first call when it does not.
pub fn first_device() -> Result<Device, DeviceError> {
    // SAFETY: only tries to load the library; no driver function is called.
    if !unsafe { sys::is_culib_present() } {
        return Err(DeviceError::NoDriver);
    }
    let driver = |e: result::DriverError| DeviceError::Driver(format!("{e:?}"));
    result::init().map_err(driver)?;
    if result::device::get_count().map_err(driver)? < 1 {
        return Err(DeviceError::NoDevice);
    }
    let dev = result::device::get(0).map_err(driver)?;
    let name = result::device::get_name(dev).map_err(driver)?;
    let attr = |a| {
        // SAFETY: `dev` came from `device::get`.
        unsafe { result::device::get_attribute(dev, a) }.map_err(driver)
    };
    let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    Ok(Device {
        ordinal: 0,
        name,
        capability: (major, minor),
    })
}
