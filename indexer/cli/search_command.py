"""``soundtrace search``: where words (or a clip, or an indexed window) happen across the archive."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass

import click

from indexer.cli.options import archive_option, collect, max_duration_option, model_options, open_archive, raw_options
from indexer.cli.output import Console, channel_mark, empty_archive_message, print_hits
from indexer.config import DecodeOptions


@dataclass(frozen=True)
class SearchRequest:
    k: int
    like: str | None
    like_window: int | None
    label: str | None
    where: str | None
    since: str | None
    until: str | None
    date_column: str | None
    per_recording: int
    refine_top: int
    exact: bool
    as_json: bool
    as_csv: bool


@click.command()
@click.argument("text", required=False)
@archive_option
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 10_000), help="Recordings to return.")
@click.option("--like", "like", default=None, help="Query by example: FILE or FILE:START-END (seconds).")
@click.option("--like-window", type=int, default=None, help="Query by an indexed window id (more like this).")
@click.option("--label", default=None, help="Rank by a learned label's newest version (`soundtrace label learn NAME`).")
@click.option("--where", default=None, help="Boolean filter over metadata columns, e.g. \"agent = 'A17' and site = 'north'\".")
@click.option("--since", default=None, help="Only recordings dated on or after YYYY-MM-DD.")
@click.option("--until", default=None, help="Only recordings dated on or before YYYY-MM-DD.")
@click.option("--date-column", default=None, help="Column --since/--until compare [default: metadata 'date', else file time].")
@click.option("--windows", "per_recording", default=3, show_default=True, type=click.IntRange(1, 100), help="Hit windows listed per recording.")
@click.option("--refine", "refine_top", type=int, default=0, show_default=True,
              help="Refine the N best hits to the 1–3 s that matter most (runs the audio model on them).")
@click.option("--exact", is_flag=True, help="Scan every window instead of asking the ANN index (to check it; slower on a large archive).")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV output.")
@collect(SearchRequest)
@max_duration_option
@raw_options
@model_options
def search(text, archive_dir, request: SearchRequest, max_duration_s, raw, encoder_config):
    """Find where TEXT happens across the archive (or what sounds like a clip)."""
    from indexer.search.filtering import SearchFilters
    from indexer.search.queries import clip_query, parse_clip_spec, text_query, window_query
    from indexer.search.ranking import search_vector

    r = request
    if sum(x is not None for x in (text, r.like, r.like_window, r.label)) != 1:
        raise click.UsageError("Give exactly one of TEXT, --like, --like-window or --label.")
    filters = SearchFilters(where=r.where, since=r.since, until=r.until, date_column=r.date_column)
    with open_archive(archive_dir, encoder_config, read_only=True) as archive:
        exclude, shown_as = frozenset(), None
        if text is not None:
            query = text_query(archive, text)
        elif r.label is not None:
            from indexer.learning.learned import newest_learned

            learned = newest_learned(archive, r.label)
            query, shown_as = learned.scorer.direction, f"{learned.label} (learned, version {learned.version})"
        elif r.like is not None:
            query, exclude = clip_query(archive, parse_clip_spec(r.like), DecodeOptions(raw=raw, max_duration_s=max_duration_s))
        else:
            query, exclude = window_query(archive, r.like_window)
        hits = search_vector(archive, query, r.k, filters, r.per_recording, exclude=exclude, exact=r.exact)
        if not hits and archive.catalog.window_count() == 0:
            Console().err(empty_archive_message(archive.directory))
            return
        split = archive.channel_mode == "split"
        highlights = {}
        if r.refine_top:
            from indexer.search.highlight import refine_hits

            highlights = refine_hits(archive, hits, query, top=r.refine_top, skip_unreadable=True)
    if r.as_json:
        click.echo(json.dumps([_with_highlight(h.to_dict(), highlights.get(h.recording_id)) for h in hits], indent=2, default=str))
    elif r.as_csv:
        _write_hits_csv([_with_highlight(h.to_dict(), highlights.get(h.recording_id)) for h in hits], split)
    else:
        print_hits(Console(), hits, text or r.like or (shown_as if r.label else f"window {r.like_window}"), highlights, split)


def _with_highlight(row: dict, spot) -> dict:
    if spot is not None:
        row.update(highlight_start_s=spot.start_s, highlight_end_s=spot.end_s, highlight_score=spot.score)
    return row


def _write_hits_csv(rows: list[dict], split_channels: bool) -> None:
    """The ``windows`` field lists each hit window as ``start-end`` (``start-end ch1`` when the
    archive keeps channels apart), separated by semicolons."""
    for row in rows:
        row["windows"] = ";".join(f"{w['start_s']:g}-{w['end_s']:g}{channel_mark(w['channel'], split_channels)}"
                                  for w in row["windows"])
    fields = list(dict.fromkeys(key for row in rows for key in row)) or ["rank", "score", "path", "start_s", "end_s"]
    writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
