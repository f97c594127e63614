//! `redproof merge SHARDS…`: the shards' results added up into one
//! report, its thresholds judged, and with `--verify` the server's
//! metrics checked once for the union of the shards' windows.

use anyhow::anyhow;

use super::exit::{Exit, Failure, exit_code, fail};
use crate::cli::MergeArgs;
use crate::report::{RunReport, merge, render_text};

pub(super) async fn run(args: MergeArgs) -> Result<Exit, Failure> {
    let mut shards = Vec::new();
    for path in &args.files {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(Exit::Usage, anyhow!("cannot read `{name}`: {e}")))?;
        let report =
            RunReport::from_json(&text).map_err(|e| fail(Exit::Usage, anyhow!("`{name}`: {e}")))?;
        shards.push((name, report));
    }
    let (merged, summary) =
        merge(shards).map_err(|e| fail(Exit::Usage, anyhow!("cannot merge: {e}")))?;
    if args.verify {
        let name = args.output.out.as_ref().map_or_else(
            || "the merged results".to_owned(),
            |p| p.display().to_string(),
        );
        return super::verify::verify_results(
            merged,
            &name,
            args.prometheus.as_deref(),
            &args.output,
        )
        .await;
    }
    anstream::print!("{}", render_text(&merged, &summary));
    super::run::write_outputs(&args.output, &merged, &summary)?;
    Ok(exit_code(&merged))
}
