"""`rollout eval export`: eval cases from what the rollout saw (shadow pairs or online judges' samples)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rollout.adapters.cli.common import transaction
from rollout.errors import InvalidInputError

eval_app = typer.Typer(help="Eval cases: export what production saw as a case file for an eval stage.",
                       no_args_is_help=True)


@eval_app.command("export")
def eval_export(
    ctx: typer.Context,
    flag: str,
    out: Annotated[Path, typer.Option("--out", help="the JSONL case file to write")],
    from_shadow: Annotated[bool, typer.Option("--from-shadow", help="shadow pairs: both arms' answers")] = False,
    from_online: Annotated[bool, typer.Option("--from-online", help="answers kept for online judges")] = False,
    sample: Annotated[int, typer.Option("--sample", help="how many cases at most")] = 200,
    stratify_by: Annotated[str, typer.Option("--stratify-by", help="category or stratum")] = "category",
    hard_share: Annotated[float, typer.Option("--hard-share", help="share of each group's cases taken from hard "
                                                                   "ones (failures, low grades, disagreements)")] = 0.5,
    rollout_id: Annotated[int | None, typer.Option("--rollout", help="one rollout's answers [default: all]")] = None,
    seed: Annotated[int, typer.Option("--seed", help="the sampling seed, for a file you can make again")] = 0,
) -> None:
    """Write eval cases (input, the baseline's answer as reference, category, scores seen); run them in an eval stage."""
    from rollout.app.eval_export import select_cases, write_cases
    from rollout.store.flags import get_flag
    from rollout.store.outcomes import flag_ids
    from rollout.store.samples import kept_answers

    if from_shadow == from_online:
        raise InvalidInputError("say where the cases come from: --from-shadow or --from-online")
    if stratify_by not in ("category", "stratum"):
        raise InvalidInputError("--stratify-by must be category or stratum")
    source = "shadow" if from_shadow else "online"
    with transaction(ctx) as s:
        state = get_flag(s, flag, namespace=ctx.obj.namespace)
        answers = kept_answers(s, flag_id=flag_ids(s, namespace=ctx.obj.namespace)[flag], baseline=state.baseline,
                               source=source, rollout_id=rollout_id)
    if not answers:
        raise InvalidInputError(f"no kept {source} answers for {flag}: keep them with store_outputs=True "
                                "(shadow) or an online_evals judge in the plan")
    cases = select_cases(answers, source=source, sample=sample, stratify_by=stratify_by,  # type: ignore[arg-type]
                         hard_share=hard_share, seed=seed)
    write_cases(cases, out)
    hard = sum(1 for c in cases if c.hard)
    groups = len({c.category for c in cases})
    typer.echo(f"wrote {len(cases)} cases ({hard} hard) in {groups} {stratify_by} group(s) to {out}, "
               f"from {len(answers)} kept {source} answers")
