//! `kpsim schema`: the JSON Schema of each machine-readable output,
//! generated from the serde types that write it.

use super::{emit, Fail, EXIT_OK};

#[derive(clap::Args, Debug)]
pub struct SchemaArgs {
    /// Which output: trace, matrix, matrix-modes (`matrix --mode A,B`) or
    /// check.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(kpsim::JSON_OUTPUTS))]
    output: String,
}

pub fn run(a: SchemaArgs) -> Result<i32, Fail> {
    let schema = kpsim::schema(&a.output).expect("clap allows only known outputs");
    let text = serde_json::to_string_pretty(&schema).expect("a schema serialises") + "\n";
    emit(None, text.as_bytes())?;
    Ok(EXIT_OK)
}
