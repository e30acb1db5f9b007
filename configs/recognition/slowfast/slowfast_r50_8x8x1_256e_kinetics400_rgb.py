_base_ = ['./slowfast_r50_4x16x1_256e_kinetics400_rgb.py']

model = dict(
    backbone=dict(
        resample_rate=4,  # tau
        speed_ratio=4,  # alpha
        slow_pathway=dict(fusion_kernel=7)))

# runtime settings
work_dir = './work_dirs/slowfast_r50_8x8x1_256e_kinetics400_rgb'
