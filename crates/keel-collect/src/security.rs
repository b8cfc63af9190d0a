use crate::{CollectError, Ctx, Piece};

pub(crate) fn collect(_ctx: &Ctx) -> Result<Piece, CollectError> {
    Ok(Piece::new(|_| {}))
}
pub(crate) fn collect_running(_ctx: &Ctx) -> Result<Piece, CollectError> {
    Ok(Piece::new(|_| {}))
}
pub(crate) fn collect_live(_ctx: &Ctx) -> Result<Piece, CollectError> {
    Ok(Piece::new(|_| {}))
}
pub(crate) fn collect_config(_ctx: &Ctx) -> Result<Piece, CollectError> {
    Ok(Piece::new(|_| {}))
}
