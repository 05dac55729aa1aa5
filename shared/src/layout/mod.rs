//! Screen layouts of the views, as plain functions: the river (§5.2) and the
//! treemap of critical feature maps (§5.3, Eq. 6).
