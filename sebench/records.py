"""The typed records a run leaves in the store, one versioned schema each.

`RunSummary` is summary.json: written last by a run (fit: 'finished' with the final-epoch numbers, or
'failed' with the epoch and the reason; store.adopt_run: a finished copy that says `reused_from`), and read
by everything that lists runs (runner, collect, reports, speed, analysis, W&B). Every reader and writer goes
through this class, so the field names live here and nowhere else.

Schema versions: 1 is the summary as every committed run wrote it (no `schema_version` key: a missing key
reads as 1). A reader refuses a summary from a newer schema (a newer sebench wrote it) rather than
guessing at its fields.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sebench.errors import UserError

SUMMARY_SCHEMA = 1


class RunSummary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = Field(SUMMARY_SCHEMA, ge=1)
    status: Literal["finished", "failed"]
    # who the run is (engine.fit._run_fields)
    run_id: str
    experiment: str
    profile: str
    labels: dict[str, str] = Field(default_factory=dict)
    model: str
    se: str  # SEConfig.short(), or "none"
    se_stages: Optional[list[int]] = None
    dataset: str  # the data label, e.g. "CIFAR-10 (JPEG q75 mirror)"
    seed: int
    epochs: int
    batch_size: int
    # a failed run: where and why
    epoch: Optional[int] = None
    reason: Optional[str] = None
    # a finished run: final-epoch numbers and costs
    final_test_top1_err: Optional[float] = None
    final_test_top5_err: Optional[float] = None
    final_test_loss: Optional[float] = None
    final_train_loss: Optional[float] = None
    params: Optional[int] = None
    flops: Optional[int] = None
    input_size: Optional[list[int]] = None
    train_img_s: Optional[float] = None
    wall_s: Optional[float] = None  # training + evaluation, no setup
    infer_img_s: Optional[float] = None
    infer_batch_size: Optional[int] = None
    data_source: Optional[str] = None
    device: Optional[str] = None  # "cpu", "cuda:0"
    device_name: Optional[str] = None  # bench.device_name: CPU model [widest ISA] or GPU name
    threads: Optional[int] = None
    world_size: Optional[int] = None
    amp: Optional[str] = None  # "off", "bfloat16", "float16"
    channels_last: Optional[bool] = None
    torch: Optional[str] = None
    timm: Optional[str] = None
    git_commit: Optional[str] = None
    time: Optional[str] = None
    reused_from: Optional[str] = None  # "<experiment>/<run_id>" of the run that trained it

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    def to_json(self) -> dict:
        """The JSON form: the schema version, then the fields the writer set (a failed run has no final
        numbers). Summaries written before the version key (schema 1) read back to what they hold."""
        data = self.model_dump(mode="json", exclude_unset=True)
        return {"schema_version": self.schema_version, **data}

    @classmethod
    def parse(cls, data: object, where: Union[str, Path]) -> "RunSummary":
        """A summary from its JSON value; UserError naming the file and the field otherwise."""
        if not isinstance(data, dict):
            raise UserError(f"a run summary must be a JSON object, got {type(data).__name__}", where=str(where),
                            fix="delete it: the run then resumes from its checkpoint, or trains again")
        version = data.get("schema_version", 1)
        if isinstance(version, int) and version > SUMMARY_SCHEMA:
            raise UserError(f"summary schema {version} is newer than this sebench's ({SUMMARY_SCHEMA})",
                            where=str(where), field="schema_version", fix="update sebench to read it")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            e = exc.errors()[0]
            field = ".".join(str(p) for p in e["loc"]) or None
            raise UserError(f"damaged run summary ({e['msg']})", where=str(where), field=field,
                            fix="delete it: the run then resumes from its checkpoint, or trains again") from None

    @classmethod
    def read(cls, path: Union[str, Path]) -> "RunSummary":
        """Read and check summary.json; UserError (file, field, fix) when it is unreadable or damaged."""
        path = Path(path)
        try:
            data = json.loads(path.read_bytes())
        except OSError as exc:
            raise UserError(f"cannot read the run summary ({exc.strerror or exc})", where=str(path)) from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError("damaged run summary (not JSON)", where=str(path),
                            fix="delete it: the run then resumes from its checkpoint, or trains again") from None
        return cls.parse(data, path)
