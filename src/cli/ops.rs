//! `kiln ops`: the ONNX ops the frontend supports.

use std::process::ExitCode;

pub(crate) const EXAMPLE: &str = "Example:
  kiln ops | grep -i attention";

pub(crate) fn ops() -> anyhow::Result<ExitCode> {
    let ops = kiln::frontend::supported_ops();
    let width = ops.iter().map(|o| o.name.len()).max().unwrap_or(0);
    for op in &ops {
        let until = op.until.map(|u| u.to_string()).unwrap_or_default();
        super::emit(&format!(
            "{:width$}  opset {}..{until}\n",
            op.name, op.since
        ))?;
    }
    eprintln!("{} ops", ops.len());
    Ok(ExitCode::SUCCESS)
}
