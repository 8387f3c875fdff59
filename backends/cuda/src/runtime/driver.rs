//! The CUDA driver as a [`Gpu`]: cudarc's primary context on device 0, the module loaded
//! from PTX text (the driver JIT-compiles it for the device), and every launch and copy
//! on the legacy default stream, so each copy is ordered after the launches before it.
//!
//! Only this file calls the driver. It is the one part of the runtime that the tests on
//! machines without a GPU cannot run; [`Driver::new`] returns the one-line
//! [`DeviceError`] there, never a panic (cudarc panics on its first call without libcuda,
//! so [`crate::device::first_device`] checks first).

use super::{Arg, Gpu};
use crate::device::{first_device, DeviceError};
use cudarc::driver::{result, sys, CudaContext, DriverError};
use std::collections::{HashMap, HashSet};
use std::ffi::{c_void, CString};
use std::sync::Arc;

/// The first CUDA device.
pub struct Driver {
    ctx: Arc<CudaContext>,
    module: Option<sys::CUmodule>,
    functions: HashMap<String, sys::CUfunction>,
    allocations: HashSet<u64>,
    /// The device's name and compute capability, for reports.
    pub device: crate::device::Device,
}

/// A driver call that failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverFailure {
    /// No usable device.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The driver returned an error.
    #[error("{what}: {error:?}")]
    Call {
        /// What was being done.
        what: String,
        /// The driver's code.
        error: DriverError,
    },
    /// A request the driver cannot take (an entry name with a NUL, no module loaded).
    #[error("{0}")]
    Request(String),
}

fn call(what: impl Into<String>) -> impl FnOnce(DriverError) -> DriverFailure {
    let what = what.into();
    move |error| DriverFailure::Call { what, error }
}

impl Driver {
    /// The first device's primary context.
    pub fn new() -> Result<Driver, DriverFailure> {
        let device = first_device()?;
        let ctx = CudaContext::new(0).map_err(call("creating the context"))?;
        Ok(Driver {
            ctx,
            module: None,
            functions: HashMap::new(),
            allocations: HashSet::new(),
            device,
        })
    }

    fn bind(&self) -> Result<(), DriverFailure> {
        self.ctx
            .bind_to_thread()
            .map_err(call("binding the context"))
    }

    fn function(&mut self, entry: &str) -> Result<sys::CUfunction, DriverFailure> {
        if let Some(&f) = self.functions.get(entry) {
            return Ok(f);
        }
        let module =
            (self.module).ok_or_else(|| DriverFailure::Request("no module loaded".into()))?;
        let name = CString::new(entry)
            .map_err(|_| DriverFailure::Request(format!("bad entry name {entry:?}")))?;
        // SAFETY: `module` was loaded by `load` in this context and not unloaded.
        let f = unsafe { result::module::get_function(module, name) }
            .map_err(call(format!("finding entry {entry}")))?;
        self.functions.insert(entry.to_string(), f);
        Ok(f)
    }
}

impl Gpu for Driver {
    type Error = DriverFailure;

    fn load(&mut self, ptx: &str) -> Result<(), DriverFailure> {
        self.bind()?;
        let text =
            CString::new(ptx).map_err(|_| DriverFailure::Request("PTX text holds a NUL".into()))?;
        // SAFETY: a NUL-terminated PTX image that outlives the call.
        let module = unsafe { result::module::load_data(text.as_ptr() as *const c_void) }
            .map_err(call("loading the PTX module"))?;
        if let Some(old) = self.module.replace(module) {
            // SAFETY: no function of the old module is used after this.
            unsafe { result::module::unload(old) }.map_err(call("unloading a module"))?;
        }
        self.functions.clear();
        Ok(())
    }

    fn alloc(&mut self, bytes: usize) -> Result<u64, DriverFailure> {
        self.bind()?;
        // SAFETY: a plain device allocation; freed in `free` or on drop.
        let at = unsafe { result::malloc_sync(bytes.max(1)) }
            .map_err(call(format!("allocating {bytes} bytes")))?;
        self.allocations.insert(at);
        Ok(at)
    }

    fn free(&mut self, at: u64) -> Result<(), DriverFailure> {
        if !self.allocations.remove(&at) {
            return Err(DriverFailure::Request(format!(
                "{at:#x} is not an allocation"
            )));
        }
        self.bind()?;
        // SAFETY: `at` came from `malloc_sync` and is freed once (removed above).
        unsafe { result::free_sync(at) }.map_err(call("freeing"))
    }

    fn write(&mut self, at: u64, data: &[u8]) -> Result<(), DriverFailure> {
        self.bind()?;
        // SAFETY: the session writes only inside allocations it sized for `data`.
        unsafe { result::memcpy_htod_sync(at, data) }.map_err(call("copying to the device"))
    }

    fn read(&mut self, at: u64, len: usize) -> Result<Vec<u8>, DriverFailure> {
        self.bind()?;
        let mut out = vec![0u8; len];
        // SAFETY: the session reads only inside allocations of at least `len` bytes.
        unsafe { result::memcpy_dtoh_sync(&mut out, at) }
            .map_err(call("copying from the device"))?;
        Ok(out)
    }

    fn launch(
        &mut self,
        entry: &str,
        grid: [u32; 3],
        block: [u32; 3],
        args: &[Arg],
    ) -> Result<(), DriverFailure> {
        self.bind()?;
        let f = self.function(entry)?;
        // Each parameter is passed by the address of its value, which must live until the
        // launch call returns.
        let mut values: Vec<u64> = (args.iter())
            .map(|a| match *a {
                Arg::U64(v) => v,
                Arg::S64(v) => v as u64,
            })
            .collect();
        let mut params: Vec<*mut c_void> = (values.iter_mut())
            .map(|v| v as *mut u64 as *mut c_void)
            .collect();
        let [gx, gy, gz] = grid;
        let [bx, by, bz] = block;
        let stream: sys::CUstream = std::ptr::null_mut();
        // SAFETY: `f` takes exactly these parameters (the launch plan lists them in the
        // entry's order, all 8 bytes), and the session checked the binding's launch
        // conditions, so every access stays inside the buffers passed.
        unsafe { result::launch_kernel(f, (gx, gy, gz), (bx, by, bz), 0, stream, &mut params) }
            .map_err(call(format!("launching {entry}")))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.bind().is_err() {
            return;
        }
        for at in self.allocations.drain() {
            // SAFETY: every address here came from `malloc_sync` and was not freed.
            let _ = unsafe { result::free_sync(at) };
        }
        if let Some(m) = self.module.take() {
            // SAFETY: no function is used after the driver is dropped.
            let _ = unsafe { result::module::unload(m) };
        }
    }
}
