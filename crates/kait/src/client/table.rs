//! Listings as aligned plain-text tables (or JSON lines for scripts).

use serde_json::Value;

/// One column: its heading and how a row's JSON gives its cell.
pub struct Column {
    pub heading: &'static str,
    pub cell: fn(&Value) -> String,
}

/// The text of `value` at `field` ("" when absent), a string without its quotes.
pub fn text(value: &Value, field: &str) -> String {
    match &value[field] {
        Value::Null => String::new(),
        Value::String(text) => crate::listen::printable(text),
        other => other.to_string(),
    }
}

/// Rows under their headings, each column as wide as its widest cell, two spaces apart.
pub fn render(columns: &[Column], rows: &[Value]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|column| (column.cell)(row)).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            cells
                .iter()
                .map(|row| row[index].chars().count())
                .chain([column.heading.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut line = String::new();
        for (index, cell) in cells.iter().enumerate() {
            if index + 1 == cells.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[index] - cell.chars().count() + 2));
            }
        }
        line.trim_end().to_owned() + "\n"
    };
    let mut out = line(columns.iter().map(|column| column.heading).collect());
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_cells_are_escaped() {
        let columns = [
            Column {
                heading: "ID",
                cell: |row| text(row, "id"),
            },
            Column {
                heading: "NAME",
                cell: |row| text(row, "name"),
            },
        ];
        let rows = [
            serde_json::json!({"id": "app_1", "name": "Site 7"}),
            serde_json::json!({"id": "app_22", "name": "bell\u{7}"}),
        ];
        assert_eq!(
            render(&columns, &rows),
            "ID      NAME\napp_1   Site 7\napp_22  bell\\u{7}\n"
        );
    }
}
