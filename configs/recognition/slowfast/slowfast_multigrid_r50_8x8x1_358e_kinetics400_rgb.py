# SlowFast R50 8x8x1 trained by MMAction2 with the multigrid schedule (long and short cycles over clip sizes;
# the published checkpoint slowfast_multigrid_r50_8x8x1_358e_kinetics400_rgb-f82bd304.pth).  The model and the
# test pipeline are MMAction2's (the 8x8x1 SlowFast with lateral_norm, as in the _steplr configs), so the
# checkpoint loads and tests here.  actionkit does not implement the multigrid training schedule nor precise BN:
# training with this config trains with the plain step schedule below.
_base_ = ['./slowfast_r50_8x8x1_256e_kinetics400_rgb_steplr.py']

data = dict(workers_per_gpu=4)
evaluation = dict(interval=3)

lr_config = dict(_delete_=True, policy='step', step=[94, 154, 196])
total_epochs = 239

# runtime settings
checkpoint_config = dict(interval=3)
work_dir = './work_dirs/slowfast_multigrid_r50_8x8x1_358e_kinetics400_rgb'
