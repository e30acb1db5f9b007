_base_ = ['./slowfast_r50_8x8x1_256e_kinetics400_rgb.py']

model = dict(
    backbone=dict(
        slow_pathway=dict(lateral_norm=True)))

lr_config = dict(
    _delete_=True,
    policy='step',
    step=[94, 154, 196],
    warmup='linear',
    warmup_by_epoch=True,
    warmup_iters=34)

# runtime settings
work_dir = './work_dirs/slowfast_r50_8x8x1_256e_kinetics400_rgb_steplr'
