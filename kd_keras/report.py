"""results.json and results.md, written from the pipeline's result dicts."""

import os

from kd_keras import runs

COLUMNS = (
    ("name", "run", "{}"),
    ("model", "model", "{}"),
    ("kd", "KD", "{}"),
    ("test_accuracy", "test acc", "{:.4f}"),
    ("params", "params", "{:,}"),
    ("train_time_s", "train s", "{:.1f}"),
    ("epochs", "epochs", "{}"),
)


def markdown_table(rows, columns=COLUMNS):
    """A GitHub markdown table of `rows` (dicts); missing cells are blank."""
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append("" if value is None else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(workdir, results):
    """Writes results.json and results.md into `workdir` atomically."""
    runs.write_json(os.path.join(workdir, "results.json"), results)
    text = (f"# Results: {results.get('dataset', '')}\n\n"
            + markdown_table(results["models"]) + "\n")
    runs.write_text(os.path.join(workdir, "results.md"), text)
    return text
