# Bank inference for the synthetic long-term data (MMAction2's lfb_slowonly_r50_ava_infer.py, scaled down):
# the baseline slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py with an LFBInferHead. Run it through the test
# tool with the baseline checkpoint once per mode (set dataset_mode below, as in MMAction2), e.g.
#   actionkit test configs/detection/synthetic/lfb_slowonly_r18_tiny_synthetic_ava_lt_infer.py BASELINE.pth \
#       --out infer_val.csv
# writes data/synthetic_ava_lt/lfb/lfb_val. `actionkit lfb LFB_CONFIG --baseline BASELINE.pth` builds the
# equivalent config for every mode from the LFB config and runs it (and then trains and tests the LFB model).
_base_ = ['./slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py']

lfb_prefix_path = 'data/synthetic_ava_lt/lfb'
dataset_mode = 'val'  # ['train', 'val']

model = dict(
    roi_head=dict(
        shared_head=dict(
            type='LFBInferHead',
            lfb_prefix_path=lfb_prefix_path,
            dataset_mode=dataset_mode,
            use_half_precision=True)))

anno_root = 'data/synthetic_ava_lt/annotations'
data = dict(
    test=dict(
        ann_file=f'{anno_root}/{dataset_mode}.csv',
        exclude_file=f'{anno_root}/{dataset_mode}_excluded_timestamps.csv',
        proposal_file=f'{anno_root}/proposals_{dataset_mode}.npz'))
