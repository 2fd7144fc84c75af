//! Reading a series from CSV text: a header row, comma-separated, one value column and an
//! optional timestamp column. Every bad cell is an error naming its line, column and text;
//! nothing is skipped or filled in silently.

use std::io::Read;

use crate::error::ForecastError;
use crate::series::Series;
use crate::timestamp;

/// Reads the column `value_column` (and `timestamp_column`, if given) from CSV with a header.
///
/// Lines are counted from 1, the header being line 1; columns from 1.
pub fn read_csv<R: Read>(
    reader: R,
    value_column: &str,
    timestamp_column: Option<&str>,
) -> Result<Series, ForecastError> {
    let mut csv = csv::ReaderBuilder::new().has_headers(true).flexible(true).trim(csv::Trim::All).from_reader(reader);
    let headers = csv.headers().map_err(|e| ForecastError::Csv(e.to_string()))?.clone();
    if headers.is_empty() || headers.iter().all(str::is_empty) {
        return Err(ForecastError::NoHeader);
    }
    let hint = if headers.len() == 1 && headers[0].contains([';', '\t']) {
        " (the file must be comma-separated)".to_string()
    } else {
        String::new()
    };
    let find = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| ForecastError::MissingColumn {
            name: name.to_string(),
            available: headers.iter().map(str::to_string).collect(),
            hint: hint.clone(),
        })
    };
    let value_idx = find(value_column)?;
    let ts_idx = timestamp_column.map(find).transpose()?;

    let mut values = Vec::new();
    let mut stamps = Vec::new();
    for record in csv.records() {
        let record = record.map_err(|e| ForecastError::Csv(e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line());
        let value_text = cell(&record, value_idx, line, value_column)?;
        values.push(parse_value(value_text).map_err(|problem| ForecastError::BadValue {
            line,
            column: value_idx + 1,
            name: value_column.to_string(),
            problem,
        })?);
        if let (Some(idx), Some(name)) = (ts_idx, timestamp_column) {
            let text = cell(&record, idx, line, name)?;
            let t = timestamp::parse(text).ok_or_else(|| ForecastError::BadTimestamp {
                line,
                column: idx + 1,
                name: name.to_string(),
                text: text.to_string(),
            })?;
            if let Some(&previous) = stamps.last()
                && t <= previous
            {
                return Err(ForecastError::TimestampsNotIncreasing {
                    line,
                    previous: timestamp::format(previous),
                    current: timestamp::format(t),
                });
            }
            stamps.push(t);
        }
    }
    let series = Series::new(value_column, values);
    if ts_idx.is_none() {
        return Ok(series);
    }
    series.with_timestamps(stamps)
}

/// The text of a cell, or an error when the row is too short or the cell is empty.
fn cell<'r>(record: &'r csv::StringRecord, idx: usize, line: u64, name: &str) -> Result<&'r str, ForecastError> {
    match record.get(idx) {
        Some(text) if !text.is_empty() => Ok(text),
        Some(_) => Err(ForecastError::BadValue {
            line,
            column: idx + 1,
            name: name.to_string(),
            problem: "the cell is empty (missing values are not filled in: remove or fill the row)".into(),
        }),
        None => Err(ForecastError::BadValue {
            line,
            column: idx + 1,
            name: name.to_string(),
            problem: format!("the row has only {} fields", record.len()),
        }),
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("{text:?} is not a finite number")),
        Err(_) => Err(format!("{text:?} is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, col: &str, ts: Option<&str>) -> Result<Series, ForecastError> {
        read_csv(text.as_bytes(), col, ts)
    }

    #[test]
    fn reads_values_and_timestamps() {
        let s = read("time,cpu,mem\n2024-05-01T00:00:00Z, 1.5 ,10\n1714521660,2,11\n", "cpu", Some("time")).unwrap();
        assert_eq!(s.values(), &[1.5, 2.0]);
        assert_eq!(s.timestamps(), Some(&[1_714_521_600_000, 1_714_521_660_000][..]));
        assert_eq!(s.name(), "cpu");
        let s = read("cpu\n1\n2\n3\n", "cpu", None).unwrap();
        assert_eq!(s.values(), &[1.0, 2.0, 3.0]);
        assert_eq!(s.timestamps(), None);
    }

    #[test]
    fn missing_column_lists_the_available_ones() {
        let err = read("time,cpu\n1,2\n", "memory", None).unwrap_err();
        assert_eq!(err.to_string(), "no column named \"memory\"; the columns are: time, cpu");
        let err = read("time,cpu\n1,2\n", "cpu", Some("ts")).unwrap_err();
        assert!(matches!(err, ForecastError::MissingColumn { .. }), "{err}");
        let err = read("time;cpu\n1;2\n", "cpu", None).unwrap_err();
        assert!(err.to_string().ends_with("the columns are: time;cpu (the file must be comma-separated)"), "{err}");
    }

    #[test]
    fn non_numeric_and_empty_cells_name_line_and_column() {
        let err = read("time,cpu\n1,2\n2,abc\n", "cpu", None).unwrap_err();
        assert_eq!(err.to_string(), "line 3, column 2 (\"cpu\"): \"abc\" is not a number");
        let err = read("time,cpu\n1,2\n2,\n", "cpu", None).unwrap_err();
        assert!(err.to_string().starts_with("line 3, column 2 (\"cpu\"): the cell is empty"), "{err}");
        let err = read("time,cpu\n1,2\n2\n", "cpu", None).unwrap_err();
        assert_eq!(err.to_string(), "line 3, column 2 (\"cpu\"): the row has only 1 fields");
        let err = read("cpu\n1\nNaN\n", "cpu", None).unwrap_err();
        assert_eq!(err.to_string(), "line 3, column 1 (\"cpu\"): \"NaN\" is not a finite number");
    }

    #[test]
    fn bad_and_decreasing_timestamps() {
        let err = read("time,cpu\nmonday,2\n", "cpu", Some("time")).unwrap_err();
        assert!(err.to_string().starts_with("line 2, column 1 (\"time\"): \"monday\" is not a timestamp"), "{err}");
        let err = read("time,cpu\n100,1\n200,2\n150,3\n", "cpu", Some("time")).unwrap_err();
        assert!(err.to_string().starts_with("line 4: timestamp"), "{err}");
    }

    #[test]
    fn empty_input_has_no_header() {
        assert_eq!(read("", "cpu", None).unwrap_err(), ForecastError::NoHeader);
    }

    #[test]
    fn header_only_gives_an_empty_series() {
        assert!(read("cpu\n", "cpu", None).unwrap().is_empty());
    }
}
