"""Model stage: one asset per model variant, trained on the split, saved and versioned."""

import dataclasses
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pydantic

from orchestration.config_bridge import dataclass_values, launchpad_config
from orchestration.io import WithFiles, input_folder, input_version
from orchestration.kubernetes import training_step_tags
from orchestration.plots import inline_png, rendered, training_curves
from orchestration.resources import PROJECT_ROOT, ArtifactStore, ComputeResource
from recmodels.data.splits import SplitData
from recmodels.evaluation import evaluate
from recmodels.launch import FIT_INPUT_TYPES, TRAINING_FILE
from recmodels.models import ModelConfig, Recommender, model_family
from recmodels.models.base import TorchRecommender
from recmodels.models.baselines import EASEConfig, ItemKNNConfig
from recmodels.models.diffrec import diffrec, l_diffrec, t_diffrec
from recmodels.models.efficientrec import EfficientRecConfig
from recmodels.models.multimodal import demure, fused, modalities_only
from recmodels.models.paper_settings import paper_settings
from recmodels.models.sasrec import GNNOConfig, esasrec, sasrec, sasrec_ss, with_gnno
from recmodels.train import TrainingHistory

GROUP = "models"


# Upstream assets a model may read besides the split: fit() keyword and the type the IO layer loads.
# The model records the parameters of what it used in ``upstream[keyword]``; the asset adds which stored
# version that was, so the saved config.json and the registry manifest say what the model trained with.
FIT_INPUTS = {
    name: (keyword, FIT_INPUT_TYPES[keyword])
    for name, keyword in {
        "item_neighbourhood_overlap": "overlap",
        "item_clusters": "clusters",
        "item_features": "modalities",
    }.items()
}


@dataclass(frozen=True)
class ModelSpec:
    """One trained model in the pipeline: a family, the preset its asset starts from, extra inputs."""

    asset: str
    family: str
    preset: ModelConfig
    summary: str
    inputs: tuple[str, ...] = ()
    # the variant's rows in the eSASRec paper's settings table (recmodels/models/paper_settings.toml)
    paper_variant: str | None = None

    @property
    def kinds(self) -> set[str]:
        """What the UI shows the asset is built with: PyTorch for trained networks, SciPy for closed forms."""
        return {"pytorch"} if issubclass(model_family(self.family), TorchRecommender) else {"scipy"}


# The pipeline's presets are the papers' models sized to its default dataset (MovieLens-100K: 943
# users, median history 65 items) and a 2-core machine, so the whole graph runs in minutes; the
# papers' own configurations are the benchmarks' (benchmarks/, docs/). Measured on ML-100K's per-user
# split: eSASRec at batch 32 reaches in 30 epochs the test NDCG@10 that batch 128 needs 60 for
# (0.160), in half the time; DiffRec's best validation came at epoch 34 of 50.
SEQUENCE_SIZE = {"max_len": 50}
SEQUENCE_TRAINING = {"epochs": 20, "patience": 4, "batch_size": 32}
DIFFUSION_TRAINING = {"epochs": 40}
# GNNO's curriculum starts at epoch 4 (the paper's Beauty schedule starts at 19) so it runs within 20 epochs.
PIPELINE_GNNO = GNNOConfig(start_epoch=4, pace=0.1)


def sized(config: ModelConfig, training: dict) -> ModelConfig:
    """``config`` with its trainer's fields replaced by ``training``."""
    return dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, **training))


def sequential(preset) -> ModelConfig:
    return sized(preset(**SEQUENCE_SIZE), SEQUENCE_TRAINING)


MODEL_SPECS = [
    ModelSpec("most_popular_model", "most_popular", ModelConfig(), "MostPopular: items by training popularity"),
    ModelSpec("item_knn_model", "item_knn", ItemKNNConfig(), "ItemKNN: sparse item-item cosine neighbours"),
    ModelSpec("ease_model", "ease", EASEConfig(), "EASE: closed-form shallow autoencoder (Steck 2019)"),
    ModelSpec("sasrec_model", "sasrec", sequential(sasrec), "SASRec: self-attention blocks, BCE with one negative"),
    ModelSpec(
        "sasrec_ss_model",
        "sasrec",
        sequential(sasrec_ss),
        "SASRec+SS: SASRec blocks, sampled softmax",
        paper_variant="sasrec_ss",
    ),
    ModelSpec(
        "esasrec_model",
        "sasrec",
        sequential(esasrec),
        "eSASRec: LiGR blocks, sampled softmax (RecSys 2025)",
        paper_variant="esasrec",
    ),
    ModelSpec(
        "sasrec_ss_gnno_model",
        "sasrec",
        with_gnno(sequential(sasrec_ss), PIPELINE_GNNO),
        "SASRec+SS+GNNO: curriculum hard negatives from the item neighbourhood overlap",
        inputs=("item_neighbourhood_overlap",),
        paper_variant="sasrec_ss",
    ),
    ModelSpec(
        "esasrec_gnno_model",
        "sasrec",
        with_gnno(sequential(esasrec), PIPELINE_GNNO),
        "eSASRec+GNNO: curriculum hard negatives from the item neighbourhood overlap",
        inputs=("item_neighbourhood_overlap",),
        paper_variant="esasrec",
    ),
    ModelSpec(
        "diffrec_model", "diffrec", sized(diffrec(), DIFFUSION_TRAINING), "DiffRec: denoising diffusion over histories"
    ),
    ModelSpec(
        "l_diffrec_model",
        "diffrec",
        sized(l_diffrec(), DIFFUSION_TRAINING),
        "L-DiffRec: diffusion in a latent space encoded per item cluster",
        inputs=("item_clusters",),
    ),
    ModelSpec(
        "t_diffrec_model",
        "diffrec",
        sized(t_diffrec(diffrec()), DIFFUSION_TRAINING),
        "T-DiffRec: DiffRec on time-weighted histories",
    ),
    ModelSpec(
        "lt_diffrec_model",
        "diffrec",
        sized(t_diffrec(l_diffrec()), DIFFUSION_TRAINING),
        "LT-DiffRec: L-DiffRec on time-weighted histories",
        inputs=("item_clusters",),
    ),
    # the preset docs/efficientrec.md measured (benchmarks/efficientrec.py defaults)
    ModelSpec(
        "efficientrec_model",
        "efficientrec",
        EfficientRecConfig(),
        "EfficientRec: user-ID-free profiles over graph-propagated item vectors, soft-cluster retrieval",
    ),
    ModelSpec(
        "multimodal_fused_model",
        "multimodal",
        sequential(fused),
        "Multi-modal eSASRec: items as id + title text + genres + year, summed",
        inputs=("item_features",),
    ),
    ModelSpec(
        "demure_model",
        "multimodal",
        sequential(demure),
        "Demure: multi-modal eSASRec with contribution-labelled denoising of each user's modalities",
        inputs=("item_features",),
    ),
    ModelSpec(
        "multimodal_features_only_model",
        "multimodal",
        sequential(modalities_only),
        "Multi-modal eSASRec without item ids: every item, trained or new, is its features",
        inputs=("item_features",),
    ),
]
MODEL_ASSETS = [spec.asset for spec in MODEL_SPECS]


RANKS_FIELD = (
    int,
    pydantic.Field(
        default=1,
        ge=1,
        description="Training processes: above 1 the step launches `torchrun --nproc-per-node <ranks> -m "
        "orchestration.ranks` (recmodels.launch under Dagster Pipes; data-parallel, each rank with the step's "
        "torch threads / ranks). The step still claims one slot of the training pool.",
    ),
)


PAPER_SETTING_FIELD = (
    str,
    pydantic.Field(
        default="",
        description="A dataset of the eSASRec paper's settings table (recmodels/models/paper_settings.toml: "
        + ", ".join(sorted({row.dataset for row in paper_settings().rows}))
        + "): its sizes, negatives, optimiser, epoch cap, stopping rule and, where the row says so, RecTools' "
        "training replace the fields above. "
        "Pair it with the split's leave_one_out and drop_seen_targets for the authors' protocol.",
    ),
)


def model_launchpad_config(spec: ModelSpec) -> type[dg.Config]:
    """The asset's launchpad config: the preset's dataclass, typed parts included, plus the validation cutoffs
    (and, for the torch families, the number of training ranks)."""
    extra = {"valid_ks": (list[int], pydantic.Field(default=[10, 20], description="Cutoffs reported on validation."))}
    if "pytorch" in spec.kinds:
        extra["ranks"] = RANKS_FIELD
    if spec.paper_variant is not None:
        extra["paper_setting"] = PAPER_SETTING_FIELD
    return launchpad_config(spec.asset, spec.preset, extra=extra)


def fit_on_ranks(
    context: dg.AssetExecutionContext,
    spec: ModelSpec,
    config: ModelConfig,
    ranks: int,
    store: ArtifactStore,
    compute: ComputeResource,
) -> Recommender:
    """Train through ``torchrun`` on this machine, ``ranks`` processes reading the stored versions this step's
    lineage names; rank 0's log reaches the run through Dagster Pipes. Returns the model rank 0 wrote."""
    folders = {"split": input_folder(context, store, "split")} | {
        FIT_INPUTS[name][0]: input_folder(context, store, name) for name in spec.inputs
    }
    with tempfile.TemporaryDirectory(prefix=f"{spec.asset}-ranks-") as scratch:
        config_file, out = Path(scratch) / "config.json", Path(scratch) / "model"
        config_file.write_text(json.dumps(config.to_dict()))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
        command += ["-m", "orchestration.ranks", "--family", spec.family, "--config", str(config_file)]
        command += ["--split", str(folders.pop("split")), "--out", str(out)]
        command += [argument for keyword, folder in folders.items() for argument in ("--input", f"{keyword}={folder}")]
        threads = str(max(1, compute.torch_threads // ranks))
        dg.PipesSubprocessClient(cwd=str(PROJECT_ROOT)).run(
            command=command, context=context, env={"OMP_NUM_THREADS": threads, "RECPIPE_TORCH_THREADS": threads}
        )
        model = Recommender.load(out)
        record = json.loads((out / TRAINING_FILE).read_text())
    model.history = TrainingHistory(**record["history"])
    context.log.info(f"trained on {record['ranks']} ranks in {record['seconds']:.1f} s")
    return model


TRAINING_POOL = "training"  # the instance's concurrency pool of training steps (orchestration/dagster.yaml)


def model_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    """Fit on train (early-stopping on validation where the family trains), report, save, version."""
    cls = model_family(spec.family)
    config_class = model_launchpad_config(spec)
    ins = {"split": dg.AssetIn("split", dagster_type=SplitData)} | {
        FIT_INPUTS[name][0]: dg.AssetIn(name, dagster_type=FIT_INPUTS[name][1]) for name in spec.inputs
    }

    def train_model(
        context: dg.AssetExecutionContext, config, compute: ComputeResource, store: ArtifactStore, **inputs
    ) -> dg.Output[WithFiles]:
        data = inputs.pop("split")
        model_config = type(spec.preset).from_dict(dataclass_values(type(spec.preset), config))
        paper_setting = getattr(config, "paper_setting", "")
        if paper_setting:
            model_config = paper_settings().row(paper_setting, spec.paper_variant).apply(model_config)
        ranks = getattr(config, "ranks", 1)
        started = time.perf_counter()
        if ranks > 1:
            model = fit_on_ranks(context, spec, model_config, ranks, store, compute)
        else:
            model = cls(model_config).fit(data, **inputs)
        train_seconds = time.perf_counter() - started
        stored = {FIT_INPUTS[name][0]: {"asset": name, "dvc_md5": input_version(context, name)} for name in spec.inputs}
        model.upstream = {keyword: {**stored.get(keyword, {}), **record} for keyword, record in model.upstream.items()}
        valid = evaluate(model, data.valid, tuple(config.valid_ks))
        files = {"valid_metrics.json": json.dumps(valid.metrics, indent=2).encode()}
        metadata: dict = {
            "family": spec.family,
            "config": dg.MetadataValue.json(model.config.to_dict()),
            "upstream": dg.MetadataValue.json(model.upstream),
            "train_seconds": round(train_seconds, 3),
            "torch_threads": compute.torch_threads,
            "ranks": ranks,
            **({"paper_setting": paper_setting} if paper_setting else {}),
            **{f"valid_{metric}": round(value, 5) for metric, value in valid.metrics.items()},
        }
        history = getattr(model, "history", None)
        if history is not None and history.loss:
            curves = history.as_dict()
            # wall-clock seconds stay in the metadata: in the versioned file they would give every
            # identical retraining a new version
            versioned = {
                name: values for name, values in curves.items() if name not in ("seconds", "communication_seconds")
            }
            chart = rendered(lambda path: training_curves(curves, model.config.valid_metric, path))
            files |= {"training_history.json": json.dumps(versioned, indent=2).encode(), "training_curves.png": chart}
            metadata["epochs"] = len(history.loss)
            metadata["best_epoch"] = history.best_epoch
            metadata["seconds_per_epoch"] = round(sum(history.seconds) / len(history.seconds), 3)
            metadata["training_curves"] = dg.MetadataValue.md(inline_png(chart, "training curves"))
            # the last value of each extra series (curriculum hardness, a modality's noise share...)
            metadata |= {f"last_{name}": round(values[-1], 4) for name, values in history.extra.items() if values}
        return dg.Output(WithFiles(model, files), metadata=metadata)

    train_model.__annotations__["config"] = config_class
    return dg.asset(
        name=spec.asset,
        group_name=GROUP,
        ins=ins,
        kinds=spec.kinds,
        description=spec.summary,
        pool=TRAINING_POOL,
        op_tags=training_step_tags(trains_torch="pytorch" in spec.kinds),
    )(train_model)


model_assets = [model_asset(spec) for spec in MODEL_SPECS]
