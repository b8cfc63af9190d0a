mod data;
mod storage;
