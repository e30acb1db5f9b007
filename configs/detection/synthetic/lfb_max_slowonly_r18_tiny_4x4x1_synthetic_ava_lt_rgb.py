# LFB with the max FBO (MMAction2 lfb_max_...) on the synthetic long-term data: lfb_avg_... with max pooling
# over the window instead of the average (same bank, window, data and schedule):
#   actionkit lfb configs/detection/synthetic/lfb_max_slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py \
#       --baseline work_dirs/slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb/epoch_10.pth [--init-from-baseline]
_base_ = ['./lfb_avg_slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py']

model = dict(roi_head=dict(shared_head=dict(fbo_cfg=dict(type='max'))))

work_dir = './work_dirs/lfb_max_slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb'
