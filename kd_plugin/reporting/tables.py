"""Every table kd-plugin prints or writes: Markdown (reports, sweeps, REPORT.md) and plain text (summaries)."""


def columns_of(rows):
    """The union of the rows' keys, in first-seen order."""
    columns = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    return columns


def markdown_cell(column, value):
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6f}" if column.endswith(("_s", "_per_image")) else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_lines(header, rows):
    """A Markdown table of already formatted cells: HEADER, then one list per row."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def markdown_table(rows, columns=None):
    """A Markdown table of dict ROWS (missing values as —, floats and ints formatted), ending in a newline."""
    columns = columns or columns_of(rows)
    return "\n".join(markdown_lines(columns, [[markdown_cell(c, row.get(c)) for c in columns] for row in rows])) + "\n"


# Up to this many classes a per-class table has one column per class (CIFAR-10); beyond, one row per class.
WIDE_PER_CLASS = 12


def per_class_lines(per_class_by_label):
    """A Markdown per-class accuracy table: {label: {class name: accuracy %}} with classes as columns (few
    classes) or as rows (many, e.g. CIFAR-100's 100), one row or column per label."""
    labels = list(per_class_by_label)
    classes = list(next(iter(per_class_by_label.values()), {}))
    cell = lambda label, name: f"{per_class_by_label[label][name]:.1f}" if name in per_class_by_label[label] \
        else "—"  # noqa: E731
    if len(classes) <= WIDE_PER_CLASS:
        header, rows = ([""] if len(labels) > 1 else []) + classes, []
        for label in labels:
            rows.append(([label] if len(labels) > 1 else []) + [cell(label, name) for name in classes])
        return markdown_lines(header, rows)
    return markdown_lines(["class", *labels], [[name, *[cell(label, name) for label in labels]] for name in classes])


def _text_cell(value):
    if isinstance(value, float):
        return f"{value:.5f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def text_table(rows):
    """A plain-text table of dict ROWS (Distiller prints tabulate's 'psql' style); no extra dependency."""
    if not rows:
        return ""
    columns = columns_of(rows)
    cells = [[_text_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |", line]
    out += ["| " + " | ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join(out + [line])
