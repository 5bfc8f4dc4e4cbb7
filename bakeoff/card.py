"""The dataset card: what ingest kept, dropped and why, as JSON for machines and Markdown for people."""

from __future__ import annotations

from typing import Any

from bakeoff.manifest import SPLITS


def with_label_issues(card: dict[str, Any], found: int, checked: int) -> dict[str, Any]:
    """The card plus the insight step's count of suspected label errors (a new dict; the ingest card stays)."""
    return {**card, "label_issues": int(found), "label_issues_checked": int(checked)}


def to_markdown(card: dict[str, Any]) -> str:
    """A short human summary of ``card.json``: counts per class and split, rejections, duplicates, groups."""
    lines = [
        "# Dataset card",
        "",
        f"- source: `{card['source']}`",
        f"- images: **{card['n_images']}** in {len(card['classes'])} classes; "
        f"fractions train/val/test {card['fractions']['train']:.2f}/{card['fractions']['val']:.2f}/"
        f"{card['fractions']['test']:.2f}, seed {card['seed']}",
        f"- dataset hash: `{card['dataset_hash']}`",
        f"- files seen: {card['files_seen']}; OS litter / hidden files ignored: {card['ignored_litter']}; "
        f"rejected: {card['n_rejected']}",
        f"- exact duplicates dropped: {card['exact_duplicates']}; near-duplicate groups merged: "
        f"{card['near_duplicates']['groups_merged']} ({card['near_duplicates']['images_in_merged_groups']} images; "
        f"each group stays in one split)",
    ]
    if card["near_duplicates"].get("groups_with_mixed_labels"):
        lines.append(
            f"- near-duplicate groups whose images carry different labels (check them): "
            f"{card['near_duplicates']['groups_with_mixed_labels']}"
        )
    if card.get("lost_to_label_conflicts"):
        lost = ", ".join(f"{k} {v}" for k, v in card["lost_to_label_conflicts"].items())
        lines.append(f"- images lost to label conflicts (same content, two labels): {lost}")
    if card.get("excluded_by_classes"):
        excluded = ", ".join(f"{k} {v}" for k, v in card["excluded_by_classes"].items())
        lines.append(f"- excluded by --classes: {excluded}")
    if card.get("label_issues") is not None:
        lines.append(
            f"- suspected label errors (confident learning, review only; nothing removed): {card['label_issues']} "
            f"of {card.get('label_issues_checked', '?')} train+val images, listed in `label_issues.csv`"
        )
    if card.get("capped_by_per_class"):
        capped = ", ".join(f"{k} {v}" for k, v in card["capped_by_per_class"].items())
        lines.append(f"- dropped by --per-class {card['per_class']}: {capped}")
    lines += [
        "",
        "## Images per class and split",
        "",
        "| class | " + " | ".join(SPLITS) + " | total |",
        "|---|" + "---:|" * (len(SPLITS) + 1),
    ]
    for label, counts in card["counts"].items():
        lines.append(f"| {label} | " + " | ".join(str(counts[s]) for s in SPLITS) + f" | {counts['total']} |")
    totals = card["splits"]
    lines.append("| **all** | " + " | ".join(str(totals[s]) for s in SPLITS) + f" | {card['n_images']} |")
    lines += ["", "## Rejections", ""]
    if card["rejected"]:
        lines += ["| reason | files |", "|---|---:|"]
        lines += [f"| {reason} | {n} |" for reason, n in card["rejected"].items()]
        lines.append("")
        lines.append("Every rejected file is listed with its full reason in `rejected.csv`.")
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"
