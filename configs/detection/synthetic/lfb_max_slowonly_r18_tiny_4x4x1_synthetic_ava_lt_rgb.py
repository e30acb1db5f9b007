# LFB with the max FBO (MMAction2 lfb_max_...) on the synthetic long-term data:
# the baseline slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py (same backbone, data and schedule) with an
# FBOHead over the feature banks that the baseline infers (as lfb_slowonly_r18_tiny_synthetic_ava_lt_infer.py):
#   actionkit lfb configs/detection/synthetic/lfb_max_slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py \
#       --baseline work_dirs/slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb/epoch_10.pth [--init-from-baseline]
# Window: the 'event' class depends on a scene-wide flash 5-25 s before or after the keyframe, so the window
# covers [t-25, t+25] (window_size 51); the bank holds the 3-4 people of each second, so 4 features per second.
_base_ = ['./slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py']

lfb_prefix_path = 'data/synthetic_ava_lt/lfb'
max_num_sampled_feat = 4
window_size = 51
lfb_channels = 64
dataset_modes = ('train', 'val')

model = dict(
    roi_head=dict(
        shared_head=dict(
            type='FBOHead',
            lfb_cfg=dict(
                lfb_prefix_path=lfb_prefix_path,
                max_num_sampled_feat=max_num_sampled_feat,
                window_size=window_size,
                lfb_channels=lfb_channels,
                dataset_modes=dataset_modes,
                device='cpu',
                deterministic_test=True),
            fbo_cfg=dict(type='max')),
        bbox_head=dict(in_channels=64 + lfb_channels)))

work_dir = './work_dirs/lfb_max_slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb'
