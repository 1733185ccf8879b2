//! Bounds on the values SQL functions build. DataFusion's memory pool accounts for
//! operators (sorts, joins, aggregations), not for the values scalar functions return:
//! `SELECT repeat('x', 1000000000)` allocates a gigabyte per row unseen. The functions
//! that can make a value much larger than their inputs are wrapped here: before they
//! run, their arguments are checked against `query_value_bytes_max` (`repeat`: length ×
//! count, `lpad`/`rpad`: target length); after they run, every wrapped function's string
//! results are checked too (`replace` and friends, whose growth depends on the data).

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::compute::{cast, max};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// How a function's output size follows from its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, n)`: up to len(text) × n bytes.
    Repeat,
    /// `lpad(text, n [, fill])`, `rpad`: n characters, up to 4 bytes each.
    Pad,
    /// Depends on the data: checked after the call.
    DataDependent,
}

const WRAPPED: &[(&str, Growth)] = &[
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("replace", Growth::DataDependent),
    ("regexp_replace", Growth::DataDependent),
    ("translate", Growth::DataDependent),
    ("overlay", Growth::DataDependent),
    ("concat", Growth::DataDependent),
    ("concat_ws", Growth::DataDependent),
];

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    growth: Growth,
    value_bytes_max: usize,
}

/// Replaces the growing functions of `ctx` with bounded ones.
pub fn install(ctx: &SessionContext, value_bytes_max: usize) {
    for (name, growth) in WRAPPED {
        let Ok(inner) = ctx.udf(name) else {
            continue;
        };
        let bounded = Bounded {
            inner: inner.as_ref().clone(),
            growth: *growth,
            value_bytes_max,
        };
        ctx.register_udf(ScalarUDF::new_from_impl(bounded));
    }
}

fn too_large(name: &str, bytes: u128, max: usize) -> DataFusionError {
    DataFusionError::Execution(format!(
        "{name}() would build a value of {bytes} bytes, over query_value_bytes_max ({max})"
    ))
}

fn as_array(value: &ColumnarValue) -> Result<ArrayRef> {
    value.to_array(1)
}

/// The largest integer of an argument (0 when all are null or negative).
fn max_int(value: &ColumnarValue) -> Result<u128> {
    let array = cast(&as_array(value)?, &DataType::Int64)?;
    let Some(ints) = array.as_any().downcast_ref::<Int64Array>() else {
        return Ok(0);
    };
    Ok(max(ints).map_or(0, |largest| u128::try_from(largest.max(0)).unwrap_or(0)))
}

/// The longest string (in bytes) of an argument.
fn max_len(value: &ColumnarValue) -> Result<u128> {
    let array = as_array(value)?;
    let lengths = match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary => {
            length(&array)?
        }
        _ => length(&cast(&array, &DataType::LargeUtf8)?)?,
    };
    let lengths = cast(&lengths, &DataType::Int64)?;
    let Some(ints) = lengths.as_any().downcast_ref::<Int64Array>() else {
        return Ok(0);
    };
    Ok(max(ints).map_or(0, |largest| u128::try_from(largest.max(0)).unwrap_or(0)))
}

impl Bounded {
    fn check_arguments(&self, args: &[ColumnarValue]) -> Result<()> {
        let max = self.value_bytes_max as u128;
        let bytes = match (self.growth, args) {
            (Growth::Repeat, [text, count, ..]) => max_len(text)?.saturating_mul(max_int(count)?),
            (Growth::Pad, [_, target, ..]) => max_int(target)?.saturating_mul(4),
            _ => 0,
        };
        if bytes > max {
            return Err(too_large(self.inner.name(), bytes, self.value_bytes_max));
        }
        Ok(())
    }

    fn check_result(&self, result: &ColumnarValue) -> Result<()> {
        let is_text = matches!(
            result.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        );
        if !is_text {
            return Ok(());
        }
        let bytes = max_len(result)?;
        if bytes > self.value_bytes_max as u128 {
            return Err(too_large(self.inner.name(), bytes, self.value_bytes_max));
        }
        Ok(())
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.inner().return_field_from_args(args)
    }

    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check_arguments(&args.args)?;
        let result = self.inner.inner().invoke_with_args(args)?;
        self.check_result(&result)?;
        Ok(result)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        // Constant folding evaluates through `invoke_with_args`, so folded calls are
        // checked too.
        self.inner.inner().simplify(args, info)
    }

    fn short_circuits(&self) -> bool {
        self.inner.inner().short_circuits()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.inner().documentation()
    }
}
