//! The NVIDIA Tegra241 CMDQ-V model. See the issue tracker for what is built here.
